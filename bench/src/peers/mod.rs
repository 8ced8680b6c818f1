//! The allocators compared, behind one small interface.

mod bump;
mod codeheap;
mod jit;
mod mapping;

pub use self::bump::Bump;
pub use self::codeheap::CodeHeap;
pub use self::jit::{JitAlloc, JitAllocLocked};
pub use self::mapping::{DynasmBuffer, Memmap2, RegionMap};

/// One way of getting executable memory for JIT code.
///
/// Every method panics on failure: a benchmark has nothing better to do.
pub trait Peer {
    /// A live block.
    type Block;

    /// A block of at least `size` bytes that [`emit`](Peer::emit) can write.
    fn alloc(&mut self, size: usize) -> Self::Block;

    /// Writes `code` at the start of the block, makes the block executable and returns its
    /// entry point. `code` is at most the size the block was allocated with.
    fn emit(&mut self, block: &mut Self::Block, code: &[u8]) -> usize;

    /// A new block holding `code`, executable, and its entry point: what a JIT does per
    /// function. [`alloc`](Peer::alloc) then [`emit`](Peer::emit) unless the allocator has
    /// one call for both.
    fn alloc_and_emit(&mut self, code: &[u8]) -> (Self::Block, usize) {
        let mut block = self.alloc(code.len());
        let entry = self.emit(&mut block, code);
        (block, entry)
    }

    /// Frees the block.
    fn free(&mut self, block: Self::Block);

    /// The block's address (where it runs from) and the size asked for.
    fn span(&self, block: &Self::Block) -> (usize, usize);

    /// Bytes the allocator itself says it has committed, if it says.
    fn committed_bytes(&self) -> Option<usize> {
        None
    }

    /// Bytes the live blocks occupy once rounded to the allocator's sizes, if it says.
    fn allocated_bytes(&self) -> Option<usize> {
        None
    }

    /// Gives back what the allocator keeps committed with no live block in it, if it can
    /// (codeheap's `trim`, for an engine gone idle); whether it did.
    fn trim(&mut self) -> bool {
        false
    }
}

/// The OS page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).expect("a page size")
}
