//! The AGH simulator.
