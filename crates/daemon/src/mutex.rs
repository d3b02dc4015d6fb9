//! Locking a mutex whose holder may have panicked: what it guards is still whole,
//! since every change under these locks is a single assignment or push.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
