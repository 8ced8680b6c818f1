//! Per-thread write/execute mode: one API on every platform.
//!
//! On Apple Silicon a thread can either write `MAP_JIT` pages or run them, never both, and
//! the switch (`pthread_jit_write_protect_np`) is per thread. The seeds' pitfalls 4 and 5
//! are a thread left in write mode by an early return, and a thread in write mode asked to
//! run code. This module makes both impossible to get wrong quietly:
//!
//! * [`WriteScope`] enters write mode and restores the previous mode when dropped — on
//!   early returns, `?` and panics alike. Scopes nest through a thread-local depth; it is
//!   `!Send`, so it cannot be dropped on another thread than the one it switched.
//! * [`enter_permanent_write_mode`] is for a background compiler thread that never runs
//!   code (ChakraCore's Jobs.cpp).
//! * [`current_mode`] tells the mode; the layers above refuse to hand code to a thread in
//!   write mode.
//!
//! On macOS arm64 the hardware switch follows the mode; elsewhere the mode is tracked in
//! software only, so the same discipline is checked on Linux and by the simulated OS.

use core::cell::Cell;
use core::marker::PhantomData;

use crate::error::{Error, Result};

/// What the calling thread may do with JIT pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadMode {
    /// The thread may run JIT code and may not write it. Every thread starts here.
    Execute,
    /// The thread may write JIT code and may not run it.
    Write,
}

#[derive(Debug, Clone, Copy)]
struct ModeState {
    /// Live `WriteScope`s on this thread. A `u64` cannot overflow: each increment is a scope
    /// that was created (and possibly forgotten).
    scope_depth: u64,
    permanent: bool,
}

impl ModeState {
    /// Where every thread starts: execute mode.
    const START: ModeState = ModeState {
        scope_depth: 0,
        permanent: false,
    };

    #[inline]
    fn mode(self) -> ThreadMode {
        if self.permanent || self.scope_depth > 0 {
            ThreadMode::Write
        } else {
            ThreadMode::Execute
        }
    }
}

// Const-initialised: every write scope and entry point reads it, and a lazily initialised
// thread-local checks its state on each access. (Loom's macro takes no `const` block.)
#[cfg(not(loom))]
crate::sync::thread_local! {
    static MODE: Cell<ModeState> = const { Cell::new(ModeState::START) };
}
#[cfg(loom)]
crate::sync::thread_local! {
    static MODE: Cell<ModeState> = Cell::new(ModeState::START);
}

#[inline]
fn update(change: impl FnOnce(&mut ModeState)) {
    MODE.with(|cell| {
        let before = cell.get();
        let mut after = before;
        change(&mut after);
        cell.set(after);
        if before.mode() != after.mode() {
            hardware::set_write_mode(after.mode() == ThreadMode::Write);
        }
    });
}

/// The calling thread's mode.
#[inline]
pub fn current_mode() -> ThreadMode {
    MODE.with(|cell| cell.get().mode())
}

/// Whether the calling thread is in permanent write mode.
pub fn is_permanent_write_mode() -> bool {
    MODE.with(|cell| cell.get().permanent)
}

/// Returns `Ok` if the calling thread is in `required` mode, else `WrongThreadMode`.
#[inline]
pub fn require_mode(required: ThreadMode) -> Result<()> {
    let current = current_mode();
    if current == required {
        Ok(())
    } else {
        Err(Error::WrongThreadMode { required, current })
    }
}

/// Puts the calling thread in write mode for the rest of its life (or until
/// [`leave_permanent_write_mode`]): for a background compiler thread that writes code and
/// never runs it. Such a thread is refused entry points.
pub fn enter_permanent_write_mode() {
    update(|state| state.permanent = true);
}

/// Ends permanent write mode; the thread returns to execute mode unless a [`WriteScope`]
/// is still open on it.
pub fn leave_permanent_write_mode() {
    update(|state| state.permanent = false);
}

/// A scope in which the calling thread is in write mode.
///
/// Dropping it returns the thread to the mode it had before, so nesting is safe and early
/// returns, `?` and panics cannot leave the thread writing. It is neither `Send` nor
/// `Sync`: the mode belongs to the thread that entered it.
#[derive(Debug)]
#[must_use = "the thread leaves write mode as soon as the scope is dropped"]
pub struct WriteScope {
    _bound_to_thread: PhantomData<*const ()>,
}

static_assertions::assert_not_impl_any!(WriteScope: Send, Sync);

impl WriteScope {
    /// Enters write mode on the calling thread.
    #[inline]
    pub fn enter() -> WriteScope {
        update(|state| state.scope_depth += 1);
        WriteScope {
            _bound_to_thread: PhantomData,
        }
    }
}

impl Drop for WriteScope {
    #[inline]
    fn drop(&mut self) {
        update(|state| state.scope_depth -= 1);
    }
}

/// Runs `f` with the calling thread in write mode and restores the previous mode after it,
/// even if `f` panics.
pub fn with_write_mode<R>(f: impl FnOnce() -> R) -> R {
    let _scope = WriteScope::enter();
    f()
}

#[cfg(all(target_os = "macos", target_arch = "aarch64", not(miri)))]
mod hardware {
    /// Flips the Apple Silicon per-thread switch for `MAP_JIT` pages.
    pub(super) fn set_write_mode(write: bool) {
        let enabled = if write { 0 } else { 1 };
        // SAFETY: pthread_jit_write_protect_np only changes the calling thread's access to
        // MAP_JIT pages; it has no memory-safety preconditions.
        unsafe { libc::pthread_jit_write_protect_np(enabled) };
    }
}

#[cfg(not(all(target_os = "macos", target_arch = "aarch64", not(miri))))]
mod hardware {
    /// No hardware switch here: the mode lives in software only. The unit tests see what
    /// Apple Silicon's switch would have been asked.
    pub(super) fn set_write_mode(write: bool) {
        #[cfg(all(test, not(loom)))]
        super::tests::SWITCHED.with(|asked| asked.borrow_mut().push(write));
        let _ = write;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::cell::RefCell;

    use super::*;

    std::thread_local! {
        /// What the hardware switch was asked on this thread, in order.
        pub(super) static SWITCHED: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
    }

    fn switched() -> Vec<bool> {
        SWITCHED.with(RefCell::take)
    }

    /// The per-thread switch of Apple Silicon is flipped when the thread's mode changes, to
    /// the new mode, and never otherwise: nested scopes and permanent mode inside a scope
    /// ask nothing of it.
    #[test]
    fn the_hardware_switch_follows_the_mode_only_when_it_changes() {
        assert!(switched().is_empty());
        {
            let _outer = WriteScope::enter();
            let _inner = WriteScope::enter();
            enter_permanent_write_mode();
        }
        assert_eq!(switched(), [true], "one flip into write mode");
        leave_permanent_write_mode();
        assert_eq!(switched(), [false]);
        leave_permanent_write_mode();
        assert_eq!(switched(), [], "no change, no flip");
        with_write_mode(|| ());
        assert_eq!(switched(), [true, false]);
    }

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current_mode(), ThreadMode::Execute);
        {
            let _outer = WriteScope::enter();
            assert_eq!(current_mode(), ThreadMode::Write);
            {
                let _inner = WriteScope::enter();
                assert_eq!(current_mode(), ThreadMode::Write);
            }
            assert_eq!(
                current_mode(),
                ThreadMode::Write,
                "inner drop must not end outer"
            );
        }
        assert_eq!(current_mode(), ThreadMode::Execute);
    }

    #[test]
    fn permanent_mode_outlives_scopes() {
        assert!(!is_permanent_write_mode());
        enter_permanent_write_mode();
        {
            let _scope = WriteScope::enter();
        }
        assert_eq!(current_mode(), ThreadMode::Write);
        assert!(is_permanent_write_mode());
        leave_permanent_write_mode();
        assert_eq!(current_mode(), ThreadMode::Execute);
        assert!(!is_permanent_write_mode());
    }

    #[test]
    fn require_mode_reports_both_modes() {
        assert_eq!(require_mode(ThreadMode::Execute), Ok(()));
        let err = with_write_mode(|| require_mode(ThreadMode::Execute)).unwrap_err();
        assert_eq!(
            err,
            Error::WrongThreadMode {
                required: ThreadMode::Execute,
                current: ThreadMode::Write
            }
        );
    }

    #[test]
    fn mode_is_per_thread() {
        let _scope = WriteScope::enter();
        let other = std::thread::spawn(current_mode).join().unwrap();
        assert_eq!(other, ThreadMode::Execute);
        assert_eq!(current_mode(), ThreadMode::Write);
    }
}
