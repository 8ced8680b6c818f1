//! The heap's bookkeeping, under its one lock.

use core::ops::Range;
use std::collections::BTreeMap;

use crate::addr_hash::AddrMap;
use crate::block::BlockRecord;
use crate::freed::FreedBlocks;
use crate::kept_large::KeptLargeBlocks;
use crate::page::{PageId, Pages};
use crate::records::{Place, Records};
use crate::size_class::CHUNK;
use crate::unwind::UnwindRecord;

/// What the heap has done, for `stats()`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) protect_made: u64,
    pub(crate) protect_skipped: u64,
    pub(crate) fills: u64,
    pub(crate) filled_bytes: u64,
    pub(crate) icache_flushes: u64,
    pub(crate) pages_acquired: u64,
    pub(crate) pages_released: u64,
    pub(crate) allocs: u64,
    pub(crate) frees: u64,
    pub(crate) secondary_probes: u64,
    pub(crate) patches: u64,
}

#[derive(Debug)]
pub(crate) struct HeapState {
    pub(crate) pages: Pages,
    /// Page address to page id.
    pub(crate) page_index: AddrMap<PageId>,
    /// Block records, found by place (see `records.rs`).
    pub(crate) blocks: Records,
    /// Large block address to its record's place and write address, ordered for address
    /// lookups.
    pub(crate) large: BTreeMap<usize, LargeBlock>,
    /// Block address to its unwind entry, for blocks allocated with one.
    pub(crate) unwind: AddrMap<UnwindRecord>,
    /// Registration order, so entries can be deregistered newest first.
    pub(crate) unwind_seq: u64,
    /// Freed small blocks kept for the next allocation of their size.
    pub(crate) freed: FreedBlocks,
    /// Freed large blocks kept for the next allocation of their page count.
    pub(crate) kept_large: KeptLargeBlocks,
    /// Block ids this heap may still hand out.
    pub(crate) ids: Range<u64>,
    pub(crate) counters: Counters,
}

/// A large block's entry in [`HeapState::large`]: where its record is, where it is written
/// and how many pages it holds (kept here, not in the record, which small blocks keep to 32
/// bytes, and not asked of the OS layer's region registry on every free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LargeBlock {
    pub(crate) place: Place,
    pub(crate) write_addr: usize,
    /// Its pages: those its size rounds up to, or more after a `shrink` whose spare pages
    /// the page allocator could not take back (the tail of a block with a mapping of its
    /// own).
    pub(crate) pages: usize,
}

impl HeapState {
    /// Books for a heap with `buckets` page lists and pages of `chunks` chunks, that keeps
    /// freed blocks for reuse if `keep_freed`.
    pub(crate) fn new(buckets: usize, chunks: usize, keep_freed: bool) -> HeapState {
        HeapState {
            pages: Pages::new(buckets, chunks),
            page_index: AddrMap::default(),
            blocks: Records::default(),
            large: BTreeMap::new(),
            unwind: AddrMap::default(),
            unwind_seq: 0,
            freed: FreedBlocks::new(keep_freed),
            kept_large: KeptLargeBlocks::new(keep_freed),
            ids: 0..0,
            counters: Counters::default(),
        }
    }

    /// The place of the record of the live block starting at `addr`: through its page's
    /// chunk places for a small block, the large-block map for a large one. Like a handle's
    /// place, it is trusted only if the record there is live and is that block's.
    #[inline]
    pub(crate) fn place_at(&self, addr: usize) -> Option<Place> {
        let page_bytes = self.pages.page_bytes();
        let offset = addr % page_bytes;
        let place = match self.page_index.get(&(addr - offset)) {
            Some(&id) if offset.is_multiple_of(CHUNK) => self.pages.place_at(id, offset / CHUNK),
            Some(_) => None,
            None => self.large.get(&addr).map(|large| large.place),
        }?;
        self.blocks.holds(place, addr).then_some(place)
    }

    /// The pages of the large block `record` records (its entry in `large` exists for as
    /// long as its record does).
    #[inline]
    pub(crate) fn large_pages(&self, record: &BlockRecord) -> usize {
        self.large[&record.addr].pages
    }

    /// A block id, from the batch this heap holds, or from a new batch `take_batch` gives
    /// when it runs out (ids stay unique in the process without an atomic per block).
    pub(crate) fn next_block_id(&mut self, take_batch: impl FnOnce() -> Range<u64>) -> u64 {
        if self.ids.is_empty() {
            self.ids = take_batch();
        }
        let id = self.ids.start;
        self.ids.start += 1;
        id
    }
}
