//! Giving back what the heap keeps for speed, for an engine that has gone idle or is told
//! memory is short: freed blocks kept for reuse, spare pages, and the free pages its page
//! allocator keeps committed. None of them holds a live block, so nothing an engine holds
//! changes; the next allocations pay the page work those caches saved (see `docs/heap.md`).

use codeheap_virtual_alloc::Os;

use crate::books::Books;
use crate::error::Result;
use crate::heap::{Heap, HeapCore};
use crate::state::HeapState;

impl<O: Os> Heap<O> {
    /// Gives back the memory the heap keeps committed without a live block in it: freed
    /// blocks kept for reuse go back to their pages, spare pages (and pages that empties)
    /// go back to the page allocator, and it decommits every free page it keeps. Live
    /// blocks, write sessions and entry points are untouched. What ChakraCore's other page
    /// allocators do when idle (`DecommitNow`); its code heap keeps no free memory. Call it
    /// when the engine goes idle or memory is short. Returns the bytes no longer committed
    /// (those the page allocator decommitted as they came back count too).
    ///
    /// If the OS refuses a release or a decommit midway, what was done stays done (the
    /// books stay consistent) and the error is returned; calling again retries the rest.
    pub fn trim(&self) -> Result<usize> {
        self.core.trim(self.locked())
    }
}

impl<O: Os> HeapCore<O> {
    /// [`Heap::trim`].
    pub(crate) fn trim(&self, mut books: impl Books) -> Result<usize> {
        let mut state = books.books();
        let committed = self.pages.stats().committed_bytes;
        for (id, first, chunks) in state.freed.take_all() {
            self.give_back_kept(&mut state, id, first, chunks);
        }
        self.release_kept_large(&mut state)?;
        self.release_spares(&mut state)?;
        self.pages.decommit_free_pages()?;
        Ok(committed.saturating_sub(self.pages.stats().committed_bytes))
    }

    /// Gives every kept large block back to the page allocator, the oldest first, so an
    /// error midway leaves the ones not yet given back kept.
    pub(crate) fn release_kept_large(&self, state: &mut HeapState) -> Result<()> {
        while self.release_oldest_kept_large(state)? {}
        Ok(())
    }

    /// Gives the oldest kept large block back to the page allocator: `false` if none is
    /// kept; if that is refused, it stays kept.
    pub(crate) fn release_oldest_kept_large(&self, state: &mut HeapState) -> Result<bool> {
        let Some(oldest) = state.kept_large.oldest() else {
            return Ok(false);
        };
        self.pages.release_pages(oldest.addr, oldest.pages)?;
        state.kept_large.drop_oldest();
        state.counters.pages_released += oldest.pages as u64;
        Ok(true)
    }

    /// Gives every spare page back to the page allocator, one at a time, so an error
    /// midway leaves the ones not yet given back as spares.
    pub(crate) fn release_spares(&self, state: &mut HeapState) -> Result<()> {
        while let Some(&id) = state.pages.spare.last() {
            let addr = state.pages.get(id).addr;
            self.pages.release_pages(addr, 1)?;
            state.pages.remove(id);
            state.page_index.remove(&addr);
            state.counters.pages_released += 1;
        }
        Ok(())
    }
}
