//! The allocator's bookkeeping, kept under one lock: the segments, the lists they are on,
//! the large segments, and the page counts the policy needs.

use std::collections::{BTreeMap, BTreeSet};

use crate::by_room::{ByRoom, Filed};
use crate::segment::{LargeSegment, Segment, SegmentList};

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) segments: BTreeMap<usize, Segment>,
    pub(crate) lists: [BTreeSet<usize>; SegmentList::ALL.len()],
    /// Every maximal run of free pages as (length, segment serial, segment base, first
    /// page): best fit is the first entry from `(n, 0, 0, 0)` on, the oldest segment's
    /// among equals. Oldest, not lowest in address: the newer segments' runs then stay
    /// free, to be decommitted or to empty their segments, where the oldest are kept full.
    /// By address the choice would follow where the OS puts mappings: `mmap` hands out
    /// addresses downwards, a code range or the MAP_JIT region upwards, and the mixed W1
    /// decommitted 0.028 pages per step taking the newest (0.20 with 10,000 live blocks)
    /// against 0.018 (0.117) taking the oldest. Kept by [`State::change`].
    pub(crate) free_runs: BTreeSet<(usize, u64, usize, usize)>,
    /// The segments on the decommitted list, by their longest run of free and decommitted
    /// pages. Kept by [`State::refile`].
    pub(crate) by_room: ByRoom,
    pub(crate) large: BTreeMap<usize, LargeSegment>,
    /// Committed pages no one holds, over all segments.
    pub(crate) free_pages: usize,
    /// Pages handed out, segments and large segments together.
    pub(crate) used_pages: usize,
    /// Pages handed out whose memory was decommitted (`decommit_pages`).
    pub(crate) parked_pages: usize,
    pub(crate) segments_created: u64,
    pub(crate) segments_released: u64,
    pub(crate) decommitted_pages: u64,
    /// Bumped whenever a segment leaves the full list because a secondary slot was freed, so
    /// a heap can lazily re-check pages it had parked as full (ChakraCore's
    /// `secondaryAllocStateChangedCount`).
    pub(crate) secondary_changes: u64,
    /// Releases that kept pages free, counted: the clock of [`Segment::last_kept`].
    pub(crate) keeps: u64,
    /// Decommits of stale free pages the OS refused (see `PageAllocator::make_room`).
    pub(crate) refused_stale_decommits: u64,
}

/// Where an address lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Segment(usize),
    Large(usize),
}

impl State {
    pub(crate) fn list(&mut self, list: SegmentList) -> &mut BTreeSet<usize> {
        &mut self.lists[list as usize]
    }

    /// The segment or large segment whose reservation holds `addr`.
    pub(crate) fn place_of(&self, addr: usize, segment_bytes: usize) -> Option<Place> {
        let segment = self.segments.range(..=addr).next_back();
        if let Some((&base, _)) = segment.filter(|(base, _)| addr < **base + segment_bytes) {
            return Some(Place::Segment(base));
        }
        let large = self.large.range(..=addr).next_back();
        large
            .filter(|(base, large)| addr < **base + large.size)
            .map(|(&base, _)| Place::Large(base))
    }

    /// Marks pages `first..first + n` of the segment at `base` free (`true`) or not, and
    /// re-indexes the runs they touch.
    pub(crate) fn set_free(&mut self, base: usize, first: usize, n: usize, free: bool) {
        self.change(base, first, n, |segment| {
            if free {
                segment.free.set_range(first, n);
            } else {
                segment.free.clear_range(first, n);
            }
        });
    }

    /// Changes pages `first..first + n` of the segment at `base` (its free and decommitted
    /// bitmaps) through `change`, and re-indexes the free runs those pages touch (the runs
    /// they merge with or split included).
    pub(crate) fn change(
        &mut self,
        base: usize,
        first: usize,
        n: usize,
        change: impl FnOnce(&mut Segment),
    ) {
        if n == 0 {
            return;
        }
        let State {
            segments,
            free_runs,
            ..
        } = self;
        let segment = segments.get_mut(&base).expect("segments changed exist");
        let (free, serial) = (segment.free, segment.serial);
        change(segment);
        // Pages decommitted as they are released, or free pages decommitted, leave the free
        // runs as they were.
        if segment.free != free {
            let (lo, hi) = (first.saturating_sub(1), first + n + 1);
            let touches = |&(start, len): &(usize, usize)| start < hi && start + len > lo;
            for (start, len) in free.runs().filter(touches) {
                free_runs.remove(&(len, serial, base, start));
            }
            for (start, len) in segment.free.runs().filter(touches) {
                free_runs.insert((len, serial, base, start));
            }
        }
    }

    /// Adds a new segment, indexing its runs.
    pub(crate) fn add_segment(&mut self, base: usize, segment: Segment) {
        for (start, len) in segment.free.runs() {
            self.free_runs.insert((len, segment.serial, base, start));
        }
        self.list(segment.list).insert(base);
        self.segments.insert(base, segment);
    }

    /// Removes a segment, its runs from the indices and it from its list.
    pub(crate) fn remove_segment(&mut self, base: usize) {
        let filed = (self.segments.get_mut(&base)).and_then(|segment| segment.filed.take());
        if let Some(at) = filed
            && let Some(moved) = self.by_room.unfile(at)
        {
            self.segments.get_mut(&moved).expect("filed").filed = Some(at);
        }
        let segment = self.segments.remove(&base).expect("removed segments exist");
        for (start, len) in segment.free.runs() {
            self.free_runs.remove(&(len, segment.serial, base, start));
        }
        self.list(segment.list).remove(&base);
    }

    /// Moves the segment to the list its state calls for, and files it by its longest run
    /// of available pages if that is the decommitted list. Returns `false` if it should be
    /// released instead (it is then left where it was, on the caller to release or keep).
    pub(crate) fn refile(&mut self, base: usize) -> bool {
        let State {
            segments,
            lists,
            by_room,
            ..
        } = self;
        let segment = segments.get_mut(&base).expect("refiled segments exist");
        let Some(new) = segment.classify() else {
            return false;
        };
        if segment.list != new {
            lists[segment.list as usize].remove(&base);
            lists[new as usize].insert(base);
            segment.list = new;
        }
        if let Some((moved, at)) = file_by_room(segment, by_room, base) {
            segments.get_mut(&moved).expect("filed").filed = Some(at);
        }
        true
    }

    /// Files the segment by its longest run if it is on the decommitted list (where a
    /// segment is put by hand when the OS refuses to take it back).
    pub(crate) fn refile_by_room(&mut self, base: usize) {
        let segment = self.segments.get_mut(&base).expect("filed segments exist");
        if let Some((moved, at)) = file_by_room(segment, &mut self.by_room, base) {
            self.segments.get_mut(&moved).expect("filed").filed = Some(at);
        }
    }
}

/// Files `segment`, at `base`, where `by_room` should have it: under its longest run of
/// free and decommitted pages if it is on the decommitted list, nowhere otherwise. Returns
/// the segment that took the slot it left, if one did, and that slot (for the caller to
/// record: this one is borrowed).
fn file_by_room(
    segment: &mut Segment,
    by_room: &mut ByRoom,
    base: usize,
) -> Option<(usize, Filed)> {
    let count =
        (segment.list == SegmentList::Decommitted).then(|| segment.available().longest_run());
    if segment.filed.map(|(filed, _)| filed) == count {
        return None;
    }
    let moved = (segment.filed.take()).and_then(|at| Some((by_room.unfile(at)?, at)));
    segment.filed = count.map(|count| by_room.file(count, base));
    moved
}
