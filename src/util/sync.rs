//! Locking that survives a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data as it is when another thread panicked while holding it. Every
/// value guarded this way stays consistent between statements (counters, maps, small records),
/// so a panic in one run must not take the status, the routes or the health record down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
