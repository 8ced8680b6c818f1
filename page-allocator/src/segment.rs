//! Segments: a reservation of pages handed out one run at a time, with a bitmap of free
//! (committed, unused) pages and one of decommitted (reserved only) pages. A page in
//! neither is allocated; an allocated page may be parked (decommitted while still held).
//! The secondary area sits after the code pages.

use crate::bitmap::Bitmap;
use crate::by_room::Filed;
use crate::secondary::SlotAllocator;

/// Most pages a segment can have (one bitmap word).
pub(crate) const MAX_SEGMENT_PAGES: usize = 64;

/// The list a segment is on, as ChakraCore's `GetSegmentList` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentList {
    /// Some pages allocated, free pages left, none decommitted.
    Partial,
    /// No free or decommitted page left, or the secondary area is exhausted.
    Full,
    /// Nothing allocated; every page free and committed (kept by `max_free_pages`).
    Empty,
    /// Some pages decommitted (and the segment not full).
    Decommitted,
}

impl SegmentList {
    /// Every list, in the order allocation searches them for free pages.
    pub const ALL: [SegmentList; 4] = [
        SegmentList::Partial,
        SegmentList::Decommitted,
        SegmentList::Empty,
        SegmentList::Full,
    ];
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) code_pages: usize,
    pub(crate) free: Bitmap<1>,
    pub(crate) decommitted: Bitmap<1>,
    /// Allocated pages whose memory was given back while their holder keeps them
    /// (`decommit_pages`): a subset of the allocated pages.
    pub(crate) parked: Bitmap<1>,
    pub(crate) slots: Option<SlotAllocator>,
    pub(crate) list: SegmentList,
    /// Where the segment is filed by its longest run of free and decommitted pages, while
    /// it is on the decommitted list.
    pub(crate) filed: Option<Filed>,
    /// How many segments the allocator made before this one: among equally good runs the
    /// oldest segment's is taken.
    pub(crate) serial: u64,
    /// Where the segment's first page is written (its region's writable view).
    pub(crate) write_base: usize,
    /// When a release last kept free pages in it (the allocator's `keeps` then; 0: never).
    /// Over `max_free_pages`, the free pages of segments released into longest ago are the
    /// first decommitted.
    pub(crate) last_kept: u64,
}

impl Segment {
    /// Pages neither free nor decommitted.
    pub(crate) fn allocated_count(&self) -> usize {
        self.code_pages - self.free.count_ones() - self.decommitted.count_ones()
    }

    /// Pages not allocated: free or decommitted.
    pub(crate) fn available(&self) -> Bitmap<1> {
        self.free.union(&self.decommitted)
    }

    /// Whether pages `first..first + n` are all allocated; the first that is not otherwise.
    pub(crate) fn first_unallocated(&self, first: usize, n: usize) -> Option<usize> {
        self.available().next_set(first).filter(|&i| i < first + n)
    }

    /// Where `n` pages that are free or decommitted lie with the most of them free (so the
    /// fewest need committing), the lowest such place among equals; and how many are free.
    pub(crate) fn fullest_window(&self, n: usize) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (start, len) in self.available().runs().filter(|&(_, len)| len >= n) {
            let mut free = (start..start + n).filter(|&i| self.free.get(i)).count();
            for first in start..=start + len - n {
                if first > start {
                    free -= usize::from(self.free.get(first - 1));
                    free += usize::from(self.free.get(first + n - 1));
                }
                if best.is_none_or(|(_, most)| free > most) {
                    best = Some((first, free));
                }
            }
        }
        best
    }

    fn slots_in_use(&self) -> usize {
        self.slots.as_ref().map_or(0, SlotAllocator::in_use)
    }

    fn secondary_exhausted(&self) -> bool {
        self.slots.as_ref().is_some_and(SlotAllocator::is_exhausted)
    }

    /// The list the segment belongs on, or `None` if nothing in it is used or committed any
    /// more and it should go back to the OS.
    pub(crate) fn classify(&self) -> Option<SegmentList> {
        let free = self.free.count_ones();
        let decommitted = self.decommitted.count_ones();
        let allocated = self.code_pages - free - decommitted;
        if allocated == 0 && free == 0 && self.slots_in_use() == 0 {
            None
        } else if (free == 0 && decommitted == 0) || self.secondary_exhausted() {
            Some(SegmentList::Full)
        } else if decommitted > 0 {
            Some(SegmentList::Decommitted)
        } else if allocated == 0 {
            Some(SegmentList::Empty)
        } else {
            Some(SegmentList::Partial)
        }
    }
}

/// A dedicated reservation for one request larger than a segment's code pages.
#[derive(Debug)]
pub(crate) struct LargeSegment {
    /// Pages handed out.
    pub(crate) pages: usize,
    /// Bytes reserved: the pages and the secondary area.
    pub(crate) size: usize,
    /// Whether its pages were decommitted while still held.
    pub(crate) parked: bool,
    pub(crate) slots: Option<SlotAllocator>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment whose pages are as `pages` says, one letter each: `f` free, `d`
    /// decommitted, `a` allocated.
    fn segment(pages: &str) -> Segment {
        let n = pages.len();
        let (mut free, mut decommitted) = (Bitmap::new(n), Bitmap::new(n));
        for (i, page) in pages.bytes().enumerate() {
            match page {
                b'f' => free.set_range(i, 1),
                b'd' => decommitted.set_range(i, 1),
                _ => {}
            }
        }
        Segment {
            code_pages: n,
            free,
            decommitted,
            parked: Bitmap::new(n),
            slots: None,
            list: SegmentList::Decommitted,
            filed: None,
            serial: 0,
            write_base: 0,
            last_kept: 0,
        }
    }

    #[test]
    fn the_fullest_window_needs_the_fewest_commits() {
        // Every window of a long run is weighed, its last one included.
        assert_eq!(segment("addddddffa").fullest_window(2), Some((7, 2)));
        assert_eq!(segment("adfdddddda").fullest_window(3), Some((1, 1)));
        assert_eq!(
            segment("addfdda").fullest_window(6),
            None,
            "no run that long"
        );
    }

    #[test]
    fn among_equal_windows_the_lowest_is_taken() {
        assert_eq!(segment("adfadfa").fullest_window(1), Some((2, 1)));
        assert_eq!(segment("dddadda").fullest_window(2), Some((0, 0)));
    }
}
