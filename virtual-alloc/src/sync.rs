//! The std/loom switch: everything that synchronises threads in codeheap goes through this
//! module, so that `--cfg loom` model-checks the real code rather than a copy of it.
//!
//! Statistics counters deliberately use `std` atomics even under loom: they order nothing,
//! and modelling them would only multiply the interleavings loom has to explore.

#[cfg(not(loom))]
pub use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(loom))]
pub use std::thread_local;
/// Atomics that order memory between threads.
#[cfg(not(loom))]
pub mod atomic {
    pub use std::sync::atomic::{AtomicU64, Ordering};
}

#[cfg(loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(loom)]
pub use loom::thread_local;
/// Atomics that order memory between threads.
#[cfg(loom)]
pub mod atomic {
    pub use loom::sync::atomic::{AtomicU64, Ordering};
}

/// Locks `mutex`, ignoring poisoning: codeheap never runs foreign code while it holds a
/// lock, so a poisoned lock only means a panic elsewhere, and its data is consistent.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a read lock, ignoring poisoning (see [`lock`]).
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a write lock, ignoring poisoning (see [`lock`]).
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
