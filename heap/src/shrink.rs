//! Shrinking a block in place: for the JIT that allocates room for the longest code a
//! function could need, assembles into it, and keeps only what it wrote (asmjit's
//! `JitAllocator::shrink`). The block keeps its address; the bytes past its new size are
//! trap-filled, and the chunks or pages past its new capacity go back to the heap.

use codeheap_virtual_alloc::{Os, WxStrategy};

use crate::block::{Block, BlockRecord, BlockState, Home};
use crate::books::Books;
use crate::config::SizeClasses;
use crate::error::{Error, Result};
use crate::heap::{Heap, HeapCore};
use crate::page::{PageId, PageList};
use crate::records::Place;
use crate::size_class::CHUNK;
use crate::state::HeapState;

impl<O: Os> Heap<O> {
    /// Shrinks `block` to its first `new_size` bytes, in place: the bytes past them become
    /// traps (a partial instruction word right after them is zeroed, as a finalized
    /// block's is), and what its new size no longer needs goes back: the chunks past a
    /// small block's new size class, the pages past a large block's new last page. A
    /// finalized block stays finalized, its entry point unchanged, and its registered unwind
    /// entry, if it has one, is replaced by one for the shorter function. A block never
    /// moves, so a large block stays one of whole pages, even shrunk within a page.
    ///
    /// Only the code past `new_size` is cut off: a thread running it then traps. Pages a
    /// large block cannot give back stay its own until it is freed: those of a block with
    /// a mapping of its own (larger than a segment; the page allocator releases such a
    /// mapping whole), and, under `Protect`, those of a block whose pages are open for
    /// writing.
    ///
    /// Fails with `ZeroSize` for `new_size` 0 (free the block instead), `CannotGrow` past
    /// its size, `BlockBusy` while it is being written, `Decommitted` after
    /// `decommit_all`, `StaleBlock` for a handle freed by address, and with the unwind
    /// builder's error if the block's frame has rows past `new_size`; none of them changes
    /// anything. If the OS refuses the trap fill or the new unwind entry, the block keeps
    /// its size (and its entry); the bytes past `new_size` may already hold traps.
    pub fn shrink(&self, block: &mut Block, new_size: usize) -> Result<()> {
        self.core.shrink(self.locked(), block, new_size)
    }
}

impl<O: Os> HeapCore<O> {
    /// [`Heap::shrink`].
    pub(crate) fn shrink(
        &self,
        mut books: impl Books,
        block: &mut Block,
        new_size: usize,
    ) -> Result<()> {
        if new_size == 0 {
            return Err(Error::ZeroSize);
        }
        if new_size > block.size {
            return Err(Error::CannotGrow {
                size: block.size,
                new_size,
            });
        }
        let mut state = books.books();
        let addr = block.addr;
        let place = self.locate(&state, addr, Some(block.key()))?;
        match state.blocks.at(place).state {
            BlockState::Writing => Err(Error::BlockBusy { addr }),
            BlockState::Parked => Err(Error::Decommitted { addr }),
            BlockState::Fresh | BlockState::Finalized => {
                self.shrink_locked(&mut state, block, place, new_size)
            }
        }
    }

    /// [`shrink`](Self::shrink) of a block whose record is at `place`, checked to be
    /// shrinkable (sizes, state), under the lock.
    pub(crate) fn shrink_locked(
        &self,
        state: &mut HeapState,
        block: &mut Block,
        place: Place,
        new_size: usize,
    ) -> Result<()> {
        let record = *state.blocks.at(place);
        let (addr, size) = (record.addr, record.size());
        if new_size == size {
            return Ok(());
        }
        let capacity = self.capacity_of(state, &record);
        let (new_capacity, floor) = match record.home {
            Home::Small { page, .. } => self.shrunk_small(state, page, new_size),
            Home::Large => (new_size.div_ceil(self.page) * self.page, 0),
        };
        let entries = self.unwind_for_shrink(state, addr, size, new_size)?;
        self.scrub(state, place, &record, capacity, new_size)?;
        if let Some(entries) = entries {
            self.reregister_unwind(state, addr, entries, (size, new_size))?;
        }
        let shrunk = state.blocks.at_mut(place);
        // `SizeClass::of` accepted the larger size.
        shrunk.size = new_size as u32;
        shrunk.floor = floor;
        match record.home {
            Home::Small { page, first_chunk } => {
                let first = usize::from(first_chunk);
                let (kept, had) = (new_capacity / CHUNK, capacity / CHUNK);
                if kept < had {
                    self.give_back_tail(state, page, first + kept, had - kept);
                }
            }
            Home::Large => {
                self.give_back_large_tail(state, &record, new_capacity / self.page);
            }
        }
        block.size = new_size;
        block.capacity = self.capacity_of(state, state.blocks.at(place));
        Ok(())
    }

    /// The capacity a small block on page `id` has once shrunk to `new_size`, and its floor.
    ///
    /// Under chunk classes, its new size's class. Under power-of-two classes, that class but
    /// no less than the page's bucket `b`: every block of the page is a multiple of `2^b`
    /// chunks at a multiple of `2^b`, which is what lets the page's free chunks come in
    /// aligned groups of `2^b` and any of them start a block of the bucket. Going below
    /// would leave a free run shorter than that, and the page would have to move to a
    /// smaller bucket, serving only smaller requests from then on: an engine truncating
    /// every function from the same room would then take a new page for each (14 times the
    /// bytes of its code in `benches/shrink.rs`, against 3.6 with no truncation at all).
    /// Kept at the bucket, the block gives back what it can and the page keeps serving its
    /// bucket; the record's floor remembers the capacity its size alone no longer gives.
    fn shrunk_small(&self, state: &HeapState, id: PageId, new_size: usize) -> (usize, u8) {
        let class = self.capacity_of_size(new_size);
        match self.classes {
            SizeClasses::Chunks => (class, 0),
            SizeClasses::PowerOfTwo => {
                let bucket = state.pages.get(id).bucket();
                let floor = CHUNK << bucket;
                if class < floor {
                    (floor, bucket as u8)
                } else {
                    (class, 0)
                }
            }
        }
    }

    /// Gives the `n` chunks from `first` of page `id` back, the end of a shrunk block, and
    /// files the page where it now belongs: with free chunks (it holds a live block, so it
    /// is not empty), under power-of-two classes in its bucket (`shrunk_small` kept the
    /// block to whole groups of it), under chunk classes by its longest free run.
    fn give_back_tail(&self, state: &mut HeapState, id: PageId, first: usize, n: usize) {
        state.pages.give_back(id, first, n);
        let page = state.pages.get(id);
        let list = match page.list {
            PageList::Full => PageList::Bucket,
            list => list,
        };
        let filed = match self.classes {
            SizeClasses::PowerOfTwo => page.bucket(),
            SizeClasses::Chunks => state.pages.chunk_bits(id).free.longest_run(),
        };
        state.pages.relist(id, list, filed);
    }

    /// Gives the pages of the large block `record` past its first `keep` back to the page
    /// allocator, if it takes them; if not, the block keeps them until it is freed.
    fn give_back_large_tail(&self, state: &mut HeapState, record: &BlockRecord, keep: usize) {
        let large = state.large[&record.addr];
        if keep == large.pages
            || (self.strategy == WxStrategy::Protect && state.blocks.at(large.place).open)
        {
            // Under `Protect` its pages are read-write while open, and the page allocator
            // takes back only pages as the heap leaves them when it is done: execute-read.
            return;
        }
        let (tail, n) = (record.addr + keep * self.page, large.pages - keep);
        if self.pages.release_pages(tail, n).is_ok() {
            state.large.get_mut(&record.addr).expect("present").pages = keep;
            state.counters.pages_released += n as u64;
        }
    }
}
