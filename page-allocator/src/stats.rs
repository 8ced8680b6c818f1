//! What the page allocator holds and has done.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Segments per list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCounts {
    /// Some pages allocated, free pages left.
    pub partial: usize,
    /// Nothing left to hand out (or no secondary slot left).
    pub full: usize,
    /// Nothing allocated, every page free and committed.
    pub empty: usize,
    /// Some pages decommitted.
    pub decommitted: usize,
    /// Dedicated segments of large requests.
    pub large: usize,
}

/// A snapshot of a [`PageAllocator`](crate::PageAllocator)'s state and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageAllocatorStats {
    /// Address space reserved by all segments.
    pub reserved_bytes: usize,
    /// Memory committed: allocated and free pages plus secondary areas.
    pub committed_bytes: usize,
    /// Bytes of pages handed out.
    pub used_bytes: usize,
    /// Bytes of free pages kept committed for reuse.
    pub free_bytes: usize,
    /// Bytes of pages handed out but decommitted by `decommit_pages`.
    pub parked_bytes: usize,
    /// Segments by list.
    pub segments: SegmentCounts,
    /// Segments (of both kinds) reserved so far.
    pub segments_created: u64,
    /// Segments (of both kinds) given back to the OS so far.
    pub segments_released: u64,
    /// Pages decommitted so far.
    pub decommitted_pages: u64,
    /// Decommits of the free pages kept longest ago that the OS refused while a release
    /// made room under `max_free_pages` (the release then decommitted its own excess).
    pub refused_stale_decommits: u64,
    /// `protect_pages` calls that succeeded.
    pub protect_calls: u64,
    /// Of those, the ones that made a system call (`Protect` segments).
    pub protect_syscalls: u64,
    /// Of those, the ones that made none (`MapJit`, `DualMap`, `Rwx` segments).
    pub protect_skipped: u64,
    /// Secondary slots handed out.
    pub secondary_slots_used: usize,
    /// Secondary slots in all segments.
    pub secondary_slots_total: usize,
}

/// Counters updated outside the allocator's lock. Plain std atomics: they order nothing.
#[derive(Debug, Default)]
pub(crate) struct ProtectCounters {
    pub(crate) calls: AtomicU64,
    pub(crate) syscalls: AtomicU64,
    pub(crate) skipped: AtomicU64,
}

impl ProtectCounters {
    pub(crate) fn record(&self, made_syscall: bool) {
        self.calls.fetch_add(1, Relaxed);
        let counter = if made_syscall {
            &self.syscalls
        } else {
            &self.skipped
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn fill(&self, stats: &mut PageAllocatorStats) {
        stats.protect_calls = self.calls.load(Relaxed);
        stats.protect_syscalls = self.syscalls.load(Relaxed);
        stats.protect_skipped = self.skipped.load(Relaxed);
    }
}
