//! How an operation reaches the heap's bookkeeping: through the heap's lock, taken for
//! each hold, or through an exclusive borrow, which needs no lock at all. Operations are
//! written once against [`Books`]; [`Heap`](crate::Heap) hands them [`Locked`], and
//! [`Exclusive`](crate::Exclusive) the bookkeeping itself.

use core::ops::DerefMut;

use codeheap_virtual_alloc::sync::{Mutex, lock};

use crate::state::HeapState;

/// Access to the bookkeeping, for one hold at a time.
pub(crate) trait Books {
    /// The bookkeeping, held until the returned guard is dropped.
    fn books(&mut self) -> impl DerefMut<Target = HeapState> + '_;
}

/// The bookkeeping behind the heap's lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Locked<'a>(pub(crate) &'a Mutex<HeapState>);

impl Books for Locked<'_> {
    #[inline]
    fn books(&mut self) -> impl DerefMut<Target = HeapState> + '_ {
        lock(self.0)
    }
}

/// The bookkeeping borrowed exclusively: no other thread can reach it, so no lock.
impl Books for &mut HeapState {
    #[inline]
    fn books(&mut self) -> impl DerefMut<Target = HeapState> + '_ {
        &mut **self
    }
}
