//! The heap's bookkeeping, under its one lock.

use core::ops::Range;
use std::collections::BTreeMap;

use crate::addr_hash::AddrMap;
use crate::page::{PageId, Pages};
use crate::records::Records;
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
}

#[derive(Debug)]
pub(crate) struct HeapState {
    pub(crate) pages: Pages,
    /// Page address to page id.
    pub(crate) page_index: AddrMap<PageId>,
    /// Block address to record, small and large.
    pub(crate) blocks: Records,
    /// Large block address to capacity, ordered for address lookups.
    pub(crate) large: BTreeMap<usize, usize>,
    /// Block address to its unwind entry, for blocks allocated with one.
    pub(crate) unwind: AddrMap<UnwindRecord>,
    /// Registration order, so entries can be deregistered newest first.
    pub(crate) unwind_seq: u64,
    /// Block ids this heap may still hand out.
    pub(crate) ids: Range<u64>,
    pub(crate) counters: Counters,
}

impl HeapState {
    /// Books for a heap with `buckets` page lists and pages of `chunks` chunks.
    pub(crate) fn new(buckets: usize, chunks: usize) -> HeapState {
        HeapState {
            pages: Pages::new(buckets, chunks),
            page_index: AddrMap::default(),
            blocks: Records::default(),
            large: BTreeMap::new(),
            unwind: AddrMap::default(),
            unwind_seq: 0,
            ids: 0..0,
            counters: Counters::default(),
        }
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
