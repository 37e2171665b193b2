//! Locking that survives a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data as it is when another thread panicked while holding it. Every
/// value guarded this way stays consistent between statements (counters, maps, small records),
/// so a panic in one run must not take the status, the routes or the health record down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value that is read whole and replaced whole while others hold the old one: the settings and
/// the handler table, which a reload replaces while a run keeps what it started with.
#[derive(Debug, Default)]
pub struct Swap<T> {
    current: std::sync::RwLock<std::sync::Arc<T>>,
}

impl<T> Swap<T> {
    pub fn new(value: T) -> Self {
        Swap {
            current: std::sync::RwLock::new(std::sync::Arc::new(value)),
        }
    }

    /// The value in force; a later [`Swap::replace`] does not change what this returned.
    pub fn get(&self) -> std::sync::Arc<T> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the value with what `make` builds from the one in force, atomically.
    pub fn replace_with(&self, make: impl FnOnce(&T) -> T) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = std::sync::Arc::new(make(&current));
    }

    /// Replaces the value for whoever reads it from now on.
    pub fn replace(&self, value: T) {
        self.replace_with(|_| value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_read_before_a_replace_stays_as_it_was() {
        let swap = Swap::new(1);
        let before = swap.get();
        swap.replace(2);
        swap.replace_with(|now| now + 1);
        assert_eq!((*before, *swap.get()), (1, 3));
    }
}
