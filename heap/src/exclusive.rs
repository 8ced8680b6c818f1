//! [`Exclusive`]: a heap's operations for the one thread that owns it, without its lock.
//!
//! A [`Heap`](crate::Heap) is `Sync`: every operation takes its lock, and an uncontended
//! lock still costs an atomic read-modify-write to take and another to release, each
//! waiting for the stores before it (the code just written) to drain. A JIT whose heap
//! belongs to one thread (one per isolate, or a single compiler thread that emits while
//! others only run the code) pays that for nothing; jit-allocator's `&mut self` API does
//! not. `Heap::exclusive(&mut self)` gives such a thread the same operations on the
//! bookkeeping itself: the borrow is the proof that no other thread can be in the heap.

use codeheap_virtual_alloc::Os;
use codeheap_xdata::FrameDescription;

use crate::block::Block;
use crate::error::Result;
use crate::heap::HeapCore;
use crate::state::HeapState;
use crate::stats::HeapStats;
use crate::write::CodeWriter;

/// A [`Heap`](crate::Heap) borrowed exclusively: its block operations, none of which takes
/// the heap's lock. Get one with [`Heap::exclusive`](crate::Heap::exclusive).
///
/// Every operation does what the [`Heap`](crate::Heap) method of the same name does, with
/// the same checks and errors; the thread-mode rules hold as well (an entry point is for a
/// thread in execute mode). Threads that only run the code need nothing from the heap and
/// run it meanwhile; a thread that wants to allocate or free must wait until the view is
/// dropped, as the borrow checker says.
#[derive(Debug)]
pub struct Exclusive<'a, O: Os> {
    core: &'a HeapCore<O>,
    state: &'a mut HeapState,
}

impl<'a, O: Os> Exclusive<'a, O> {
    pub(crate) fn new(core: &'a HeapCore<O>, state: &'a mut HeapState) -> Self {
        Exclusive { core, state }
    }

    /// [`Heap::alloc`](crate::Heap::alloc).
    pub fn alloc(&mut self, size: usize) -> Result<Block> {
        self.core.alloc_block(&mut *self.state, size, None)
    }

    /// [`Heap::alloc_with_unwind`](crate::Heap::alloc_with_unwind).
    pub fn alloc_with_unwind(&mut self, size: usize, frame: FrameDescription) -> Result<Block> {
        self.core.alloc_block(&mut *self.state, size, Some(frame))
    }

    /// [`Heap::write`](crate::Heap::write).
    pub fn write<R>(
        &mut self,
        block: &mut Block,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<R> {
        self.core.write(&mut *self.state, block, emit)
    }

    /// [`Heap::emit`](crate::Heap::emit).
    pub fn emit<R>(
        &mut self,
        size: usize,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<(Block, R)> {
        self.core.emit_block(&mut *self.state, size, None, emit)
    }

    /// [`Heap::emit_with_unwind`](crate::Heap::emit_with_unwind).
    pub fn emit_with_unwind<R>(
        &mut self,
        size: usize,
        frame: FrameDescription,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<(Block, R)> {
        self.core
            .emit_block(&mut *self.state, size, Some(frame), emit)
    }

    /// [`Heap::emit_code`](crate::Heap::emit_code).
    pub fn emit_code(&mut self, code: &[u8]) -> Result<Block> {
        self.core.emit_code_block(&mut *self.state, code, None)
    }

    /// [`Heap::emit_code_with_unwind`](crate::Heap::emit_code_with_unwind).
    pub fn emit_code_with_unwind(&mut self, code: &[u8], frame: FrameDescription) -> Result<Block> {
        self.core
            .emit_code_block(&mut *self.state, code, Some(frame))
    }

    /// [`Heap::entry_point`](crate::Heap::entry_point).
    pub fn entry_point(&mut self, block: &Block) -> Result<usize> {
        self.core.entry_point(&mut *self.state, block)
    }

    /// [`Heap::sync_cores`](crate::Heap::sync_cores): before handing what was just
    /// written to threads that run code.
    pub fn sync_cores(&self) -> Result<()> {
        Ok(self.core.vm().sync_cores()?)
    }

    /// [`Heap::patch`](crate::Heap::patch).
    pub fn patch(&mut self, block: &Block, offset: usize, bytes: &[u8]) -> Result<()> {
        self.core.patch(&mut *self.state, block, offset, bytes)
    }

    /// [`Heap::patch_address`](crate::Heap::patch_address).
    pub fn patch_address(&mut self, addr: usize, bytes: &[u8]) -> Result<()> {
        self.core.patch_address(&mut *self.state, addr, bytes)
    }

    /// [`Heap::shrink`](crate::Heap::shrink).
    pub fn shrink(&mut self, block: &mut Block, new_size: usize) -> Result<()> {
        self.core.shrink(&mut *self.state, block, new_size)
    }

    /// [`Heap::free`](crate::Heap::free).
    pub fn free(&mut self, block: Block) -> Result<()> {
        (self.core).free_checked(self.state, block.addr, Some(block.key()))
    }

    /// [`Heap::free_address`](crate::Heap::free_address).
    pub fn free_address(&mut self, addr: usize) -> Result<()> {
        self.core.free_checked(self.state, addr, None)
    }

    /// [`Heap::trim`](crate::Heap::trim).
    pub fn trim(&mut self) -> Result<usize> {
        self.core.trim(&mut *self.state)
    }

    /// [`Heap::stats`](crate::Heap::stats).
    pub fn stats(&self) -> HeapStats {
        self.core.stats(self.state)
    }
}
