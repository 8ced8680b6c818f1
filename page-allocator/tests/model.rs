//! Model test of the page allocator: random sequences of good and bad calls, each checked
//! against a model of what it must do, on the simulated OS (Apple and Linux rules, every
//! strategy) and on the real OS.
//!
//! The model keeps, per segment, the state of every code page (allocated with a protection,
//! parked by `decommit_pages`, free with the protection its last holder left, or
//! decommitted) and its secondary slots, plus the runs and slots handed out. From it each call's outcome is predicted exactly:
//! the error of a bad call (which must change nothing), where an allocation lands (the
//! search order of `docs/page-allocator.md`), which released pages are kept, which slot
//! comes next, when a segment goes back to the OS. After every step the allocator's stats,
//! lists and the OS layer's page states must match the model.
#![cfg(not(loom))]

use std::collections::BTreeMap;

use codeheap_page_allocator::{
    Error, PageAllocator, PageAllocatorConfig, PageAllocatorStats, PageRun, SecondarySlot,
    SegmentList,
};
use codeheap_test_support::sim_proptest_config;
use codeheap_virtual_alloc::sim::{SimOs, SyscallCounts};
use codeheap_virtual_alloc::{
    self as vm, Os, PageState, Protection, SysCall, VirtualAlloc, WriteScope, WxStrategy,
};
use proptest::prelude::*;

// ---- operations -------------------------------------------------------------------------

/// An address, chosen relative to what the model holds when the step runs.
#[derive(Debug, Clone)]
enum Addr {
    /// Page `skip` (modulo its length) of a live run.
    Run { run: usize, skip: usize },
    /// The start of a run released earlier (a double release, or a use after release).
    Released { run: usize },
    /// Page `page` of a live segment's reservation: code pages, the secondary area, or
    /// the first page past the end.
    SegmentPage { segment: usize, page: usize },
    /// An address in no segment: 0, one page, 256 MiB, the last page of the address space,
    /// the base of a segment given back.
    Foreign { which: usize },
}

/// A page count, relative to the run or page the address came from.
#[derive(Debug, Clone)]
enum Count {
    /// To the end of the run (1 if the address is not in a run).
    Rest,
    /// Exactly this many.
    Exact(usize),
    /// Past the end of the run.
    RestPlus(usize),
    Zero,
    /// Counts at the edge of overflowing the address space in bytes.
    Huge(usize),
}

#[derive(Debug, Clone)]
struct Range {
    addr: Addr,
    /// Bytes added to the address (0: aligned).
    misalign: usize,
    count: Count,
}

#[derive(Debug, Clone)]
enum SlotRef {
    Live(usize),
    /// A slot released earlier.
    Released(usize),
    /// A live slot's address plus 8.
    Misaligned(usize),
    At(Addr),
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    /// Zero or overflowing page counts.
    AllocBad(Count),
    /// A page count whose bytes fit but whose reservation cannot be made: one that
    /// overflows once the secondary area and alignment slack are added, or 128 TiB.
    AllocHuge {
        beyond_address_space: bool,
    },
    /// A live run, exactly; `discard` gives it back with `discard_pages`.
    ReleaseRun {
        run: usize,
        discard: bool,
    },
    Release(Range),
    /// A whole live run; `expected: None` is the protection it has.
    ProtectRun {
        run: usize,
        new: Protection,
        expected: Option<Protection>,
    },
    Protect {
        range: Range,
        new: Protection,
        expected: Option<Protection>,
    },
    DecommitFree,
    /// Park a whole live run.
    DecommitRun(usize),
    DecommitPages(Range),
    /// `times` slots in a row in the segment holding the address.
    AllocSecondary {
        at: Addr,
        times: usize,
    },
    ReleaseSecondary(SlotRef),
}

fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        6 => (any::<usize>(), prop_oneof![3 => Just(0), 1 => any::<usize>()])
            .prop_map(|(run, skip)| Addr::Run { run, skip }),
        1 => any::<usize>().prop_map(|run| Addr::Released { run }),
        2 => (any::<usize>(), 0..80usize)
            .prop_map(|(segment, page)| Addr::SegmentPage { segment, page }),
        1 => (0..5usize).prop_map(|which| Addr::Foreign { which }),
    ]
}

fn count(max: usize) -> impl Strategy<Value = Count> {
    prop_oneof![
        8 => Just(Count::Rest),
        3 => (1..=max).prop_map(Count::Exact),
        2 => (1..4usize).prop_map(Count::RestPlus),
        1 => Just(Count::Zero),
        1 => (0..5usize).prop_map(Count::Huge),
    ]
}

fn range(max: usize) -> impl Strategy<Value = Range> {
    let misalign = prop_oneof![8 => Just(0), 1 => Just(1), 1 => Just(64), 1 => Just(2048)];
    (addr(), misalign, count(max)).prop_map(|(addr, misalign, count)| Range {
        addr,
        misalign,
        count,
    })
}

fn protection() -> impl Strategy<Value = Protection> {
    prop_oneof![
        4 => Just(Protection::ExecuteRead),
        4 => Just(Protection::ReadWrite),
        1 => Just(Protection::ReadOnly),
        1 => Just(Protection::NoAccess),
        1 => Just(Protection::ExecuteReadWrite),
    ]
}

fn expected_old() -> impl Strategy<Value = Option<Protection>> {
    prop_oneof![4 => Just(None), 1 => protection().prop_map(Some)]
}

fn slot_ref() -> impl Strategy<Value = SlotRef> {
    prop_oneof![
        6 => any::<usize>().prop_map(SlotRef::Live),
        2 => any::<usize>().prop_map(SlotRef::Released),
        1 => any::<usize>().prop_map(SlotRef::Misaligned),
        1 => addr().prop_map(SlotRef::At),
    ]
}

fn op(code_pages: usize) -> impl Strategy<Value = Op> {
    let max = code_pages + 3;
    prop_oneof![
        24 => (1..=max).prop_map(Op::Alloc),
        2 => prop_oneof![Just(Count::Zero), (0..3usize).prop_map(Count::Huge)]
            .prop_map(Op::AllocBad),
        1 => any::<bool>().prop_map(|beyond_address_space| Op::AllocHuge { beyond_address_space }),
        16 => (any::<usize>(), prop::bool::weighted(0.2))
            .prop_map(|(run, discard)| Op::ReleaseRun { run, discard }),
        6 => range(max).prop_map(Op::Release),
        10 => (any::<usize>(), protection(), expected_old())
            .prop_map(|(run, new, expected)| Op::ProtectRun { run, new, expected }),
        4 => (range(max), protection(), expected_old())
            .prop_map(|(range, new, expected)| Op::Protect { range, new, expected }),
        3 => Just(Op::DecommitFree),
        3 => any::<usize>().prop_map(Op::DecommitRun),
        2 => range(max).prop_map(Op::DecommitPages),
        10 => (addr(), prop_oneof![3 => Just(1), 1 => 2..=5usize])
            .prop_map(|(at, times)| Op::AllocSecondary { at, times }),
        7 => slot_ref().prop_map(Op::ReleaseSecondary),
    ]
}

fn ops(config: PageAllocatorConfig, max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(config.code_pages()), 1..=max_len)
}

// ---- the model ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// Handed out, with its protection.
    Allocated(Protection),
    /// Handed out, but decommitted by `decommit_pages` ("parked").
    Parked,
    /// Committed and kept for reuse, with the protection its last holder left.
    Free(Protection),
    /// Reserved only.
    Decommitted,
}

impl Page {
    fn is_held(self) -> bool {
        matches!(self, Page::Allocated(_) | Page::Parked)
    }

    /// What `VirtualAlloc::query` must say about the page.
    fn state(self) -> PageState {
        match self {
            Page::Allocated(p) | Page::Free(p) => PageState::Committed(p),
            Page::Parked | Page::Decommitted => PageState::Reserved,
        }
    }
}

#[derive(Debug)]
struct Seg {
    large: bool,
    /// Bytes reserved.
    size: usize,
    /// Where the OS layer writes the region (its second view under `DualMap`).
    write_base: usize,
    /// The code pages (a large segment: the pages handed out).
    pages: Vec<Page>,
    /// Secondary slots, `true` when in use.
    slots: Vec<bool>,
    /// Whether the secondary area is committed: from its first slot on.
    area_committed: bool,
    /// Segments made before it: of equally short free runs, the oldest segment's is taken.
    serial: u64,
    /// The model's `keeps` when a release last kept pages free in it: over the cap, the
    /// free pages of the segments kept into longest ago are decommitted first.
    last_kept: u64,
}

impl Seg {
    fn count(&self, f: impl Fn(Page) -> bool) -> usize {
        self.pages.iter().filter(|&&p| f(p)).count()
    }

    /// Pages handed out, parked ones included.
    fn allocated(&self) -> usize {
        self.count(Page::is_held)
    }

    fn parked(&self) -> usize {
        self.count(|p| p == Page::Parked)
    }

    fn free(&self) -> usize {
        self.count(|p| matches!(p, Page::Free(_)))
    }

    fn decommitted(&self) -> usize {
        self.count(|p| p == Page::Decommitted)
    }

    fn slots_used(&self) -> usize {
        self.slots.iter().filter(|&&used| used).count()
    }

    fn exhausted(&self) -> bool {
        !self.slots.is_empty() && self.slots.iter().all(|&used| used)
    }

    /// The list the table of `docs/page-allocator.md` puts a segment on; `None`: it goes
    /// back to the OS.
    fn list(&self) -> Option<SegmentList> {
        let (allocated, free, decommitted) = (self.allocated(), self.free(), self.decommitted());
        if allocated == 0 && free == 0 && self.slots_used() == 0 {
            None
        } else if (free == 0 && decommitted == 0) || self.exhausted() {
            Some(SegmentList::Full)
        } else if decommitted > 0 {
            Some(SegmentList::Decommitted)
        } else if allocated == 0 {
            Some(SegmentList::Empty)
        } else {
            Some(SegmentList::Partial)
        }
    }

    /// Maximal runs of free pages: start and length.
    fn free_runs(&self) -> Vec<(usize, usize)> {
        self.runs_of(|p| matches!(p, Page::Free(_)))
    }

    /// Every window of `n` pages no one holds, as (first page, free pages in it).
    fn windows(&self, n: usize) -> Vec<(usize, usize)> {
        let mut windows = Vec::new();
        for (start, len) in self
            .available_runs()
            .into_iter()
            .filter(|&(_, len)| len >= n)
        {
            for first in start..=start + len - n {
                let free = (self.pages[first..first + n].iter())
                    .filter(|p| matches!(p, Page::Free(_)))
                    .count();
                windows.push((first, free));
            }
        }
        windows
    }

    /// Maximal runs of pages no one holds (free or decommitted).
    fn available_runs(&self) -> Vec<(usize, usize)> {
        self.runs_of(|p| !p.is_held())
    }

    /// Maximal runs of pages that are `such`, as (first, length).
    fn runs_of(&self, such: impl Fn(&Page) -> bool) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < self.pages.len() {
            let len = self.pages[i..].iter().take_while(|p| such(p)).count();
            if len > 0 {
                runs.push((i, len));
            }
            i += len.max(1);
        }
        runs
    }
}

/// Where the model says an allocation lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Large,
    /// Free committed pages (search step 1).
    Free {
        base: usize,
        first: usize,
    },
    /// Free or decommitted pages of a decommitted segment, `free` of them free (step 2).
    Commit {
        free: usize,
    },
    /// A new segment (step 3).
    New,
}

#[derive(Debug)]
struct Model {
    page: usize,
    granularity: usize,
    config: PageAllocatorConfig,
    strategy: WxStrategy,
    segs: BTreeMap<usize, Seg>,
    runs: Vec<PageRun>,
    released_runs: Vec<PageRun>,
    slots: Vec<SecondarySlot>,
    released_slots: Vec<SecondarySlot>,
    /// Segments given back to the OS: base, size, writable view.
    gone: Vec<(usize, usize, usize)>,
    created: u64,
    released: u64,
    decommitted_pages: u64,
    protect_calls: u64,
    /// Times a slot release moved a segment off the full list.
    state_changes: u64,
    /// Releases that kept pages free.
    keeps: u64,
}

impl Model {
    fn new<O: Os>(pages: &PageAllocator<O>) -> Model {
        Model {
            page: pages.page_size(),
            granularity: pages.vm().allocation_granularity(),
            config: *pages.config(),
            strategy: pages.vm().strategy(),
            segs: BTreeMap::new(),
            runs: Vec::new(),
            released_runs: Vec::new(),
            slots: Vec::new(),
            released_slots: Vec::new(),
            gone: Vec::new(),
            created: 0,
            released: 0,
            decommitted_pages: 0,
            protect_calls: 0,
            state_changes: 0,
            keeps: 0,
        }
    }

    fn code_pages(&self) -> usize {
        self.config.code_pages()
    }

    fn slot_count(&self) -> usize {
        self.config.slots_per_segment(self.page)
    }

    /// The largest page count whose bytes, rounded up to the granularity, still fit.
    fn max_pages(&self) -> usize {
        (usize::MAX - self.granularity + 1) / self.page
    }

    fn huge(&self, which: usize) -> usize {
        let page = self.page;
        [
            usize::MAX,
            usize::MAX / page,
            self.max_pages() + 1,
            usize::MAX / page + 1,
            self.max_pages(),
        ][which % 5]
    }

    fn foreign(&self, which: usize) -> usize {
        let last = usize::MAX - self.page + 1;
        let gone = self.gone.last().map_or(2 * self.page, |g| g.0);
        [0, self.page, 0x1000_0000, last, gone][which % 5]
    }

    /// The state of a run's first page.
    fn first_page(&self, run: &PageRun) -> Page {
        self.segs[&run.segment].pages[(run.addr - run.segment) / self.page]
    }

    fn free_pages(&self) -> usize {
        self.segs.values().map(Seg::free).sum()
    }

    /// The segment whose reservation holds `addr`.
    fn place(&self, addr: usize) -> Option<usize> {
        let (&base, seg) = self.segs.range(..=addr).next_back()?;
        (addr - base < seg.size).then_some(base)
    }

    fn secondary_base(&self, base: usize) -> usize {
        base + self.segs[&base].pages.len() * self.page
    }

    /// `ZeroPages` or `PageCountOverflow` if `pages` pages cannot be asked for.
    fn check_count(&self, pages: usize) -> Result<(), Error> {
        if pages == 0 {
            return Err(Error::ZeroPages);
        }
        pages
            .checked_mul(self.page)
            .and_then(|bytes| bytes.checked_next_multiple_of(self.granularity))
            .map(drop)
            .ok_or(Error::PageCountOverflow { pages })
    }

    fn expect_alloc(&self, n: usize) -> Result<Placement, Error> {
        self.check_count(n)?;
        if n > self.code_pages() {
            return Ok(Placement::Large);
        }
        let normal = || self.segs.iter().filter(|(_, seg)| !seg.large);
        let on = |list| normal().filter(move |(_, seg)| seg.list() == Some(list));
        // Best fit: the shortest run of free pages, the oldest segment's of equals (the
        // lowest address of equals in the segment), in a segment not on the full list.
        let best = normal()
            .filter(|(_, seg)| seg.list() != Some(SegmentList::Full))
            .flat_map(|(&base, seg)| {
                seg.free_runs()
                    .into_iter()
                    .map(move |(first, len)| (len, seg.serial, base, first))
            })
            .filter(|&(len, ..)| len >= n)
            .min();
        if let Some((.., base, first)) = best {
            return Ok(Placement::Free { base, first });
        }
        // Then a window of free or decommitted pages in a segment with decommitted pages,
        // one with the most free pages (which of equals is the allocator's choice: the
        // runs use fewer segments than it weighs at most).
        let most_free = on(SegmentList::Decommitted)
            .flat_map(|(_, seg)| seg.windows(n))
            .map(|(_, free)| free)
            .max();
        Ok(match most_free {
            Some(free) => Placement::Commit { free },
            None => Placement::New,
        })
    }

    /// Where `pages` pages at `addr` lie, as release and protect check it: the segment and
    /// the first page's index.
    fn locate(
        &self,
        addr: usize,
        pages: usize,
        whole_large: bool,
    ) -> Result<(usize, usize), Error> {
        self.check_count(pages)?;
        if !addr.is_multiple_of(self.page) {
            return Err(Error::Unaligned {
                addr,
                align: self.page,
            });
        }
        let base = self.place(addr).ok_or(Error::NotInSegment { addr })?;
        let seg = &self.segs[&base];
        let first = (addr - base) / self.page;
        let crosses = Error::CrossesSegment { addr, pages };
        if seg.large {
            let len = seg.pages.len();
            if first >= len {
                return Err(Error::NotAllocated { addr });
            }
            if whole_large && (addr != base || pages != len) {
                return Err(Error::PartialLargeRelease { base, pages: len });
            }
            if first + pages > len {
                return Err(crosses);
            }
            return Ok((base, first));
        }
        if first + pages > seg.pages.len() {
            return Err(crosses);
        }
        match (first..first + pages).find(|&i| !seg.pages[i].is_held()) {
            Some(i) => Err(Error::NotAllocated {
                addr: base + i * self.page,
            }),
            None => Ok((base, first)),
        }
    }

    fn expect_release(&self, addr: usize, pages: usize) -> Result<(usize, usize), Error> {
        let (base, first) = self.locate(addr, pages, true)?;
        let seg = &self.segs[&base];
        if seg.large && seg.slots_used() > 0 {
            return Err(Error::SecondaryInUse {
                segment: base,
                slots: seg.slots_used(),
            });
        }
        Ok((base, first))
    }

    fn expect_protect(
        &self,
        addr: usize,
        pages: usize,
        new: Protection,
        expected: Protection,
    ) -> Result<(usize, usize), Error> {
        let (base, first) = self.locate(addr, pages, false)?;
        if new == Protection::ExecuteReadWrite && self.strategy != WxStrategy::Rwx {
            return Err(Error::Vm(vm::Error::WxViolation {
                strategy: self.strategy,
                protection: new,
            }));
        }
        let seg = &self.segs[&base];
        let span = first..first + pages;
        if let Some(i) = span.clone().find(|&i| seg.pages[i] == Page::Parked) {
            return Err(Error::Vm(vm::Error::NotCommitted {
                addr: base + i * self.page,
            }));
        }
        for i in span {
            let Page::Allocated(found) = seg.pages[i] else {
                unreachable!("located")
            };
            if found != expected {
                return Err(Error::Vm(vm::Error::ProtectionMismatch {
                    addr: base + i * self.page,
                    expected,
                    found,
                }));
            }
        }
        Ok((base, first))
    }

    fn expect_alloc_secondary(&self, addr: usize) -> Result<SecondarySlot, Error> {
        let base = self.place(addr).ok_or(Error::NotInSegment { addr })?;
        let seg = &self.segs[&base];
        let index = seg
            .slots
            .iter()
            .position(|&used| !used)
            .ok_or(Error::SecondaryExhausted { segment: base })?;
        let size = self.config.secondary_slot_size;
        Ok(SecondarySlot {
            addr: self.secondary_base(base) + index * size,
            size,
            segment: base,
        })
    }

    /// The segment and index of the allocated slot at `addr`.
    fn expect_release_secondary(&self, addr: usize) -> Result<(usize, usize), Error> {
        let not_a_slot = Error::NotASlot { addr };
        let base = self.place(addr).ok_or(not_a_slot.clone())?;
        let size = self.config.secondary_slot_size;
        let offset = addr
            .checked_sub(self.secondary_base(base))
            .filter(|offset| offset.is_multiple_of(size))
            .ok_or(not_a_slot.clone())?;
        let index = offset / size;
        match self.segs[&base].slots.get(index) {
            Some(true) => Ok((base, index)),
            _ => Err(not_a_slot),
        }
    }

    /// Decommits whole free runs of segments other than `releasing`, those kept into longest
    /// ago first, until `wanted` pages are decommitted.
    fn decommit_stale(&mut self, releasing: usize, wanted: usize) {
        let mut stale: Vec<(u64, usize)> = (self.segs.iter())
            .filter(|&(&base, seg)| base != releasing && !seg.large && seg.free() > 0)
            .map(|(&base, seg)| (seg.last_kept, base))
            .collect();
        stale.sort_unstable();
        let mut room = 0;
        for (_, base) in stale {
            let seg = self.segs.get_mut(&base).expect("listed");
            let mut i = 0;
            while i < seg.pages.len() && room < wanted {
                let run = seg.pages[i..]
                    .iter()
                    .take_while(|p| matches!(p, Page::Free(_)))
                    .count();
                seg.pages[i..i + run].fill(Page::Decommitted);
                self.decommitted_pages += run as u64;
                room += run;
                i += run.max(1);
            }
            self.maybe_release(base);
            if room >= wanted {
                break;
            }
        }
    }

    /// Gives a segment with nothing in use back to the OS. Returns whether it did.
    fn maybe_release(&mut self, base: usize) -> bool {
        let seg = &self.segs[&base];
        if seg.large || seg.list().is_some() {
            return false;
        }
        let seg = self.segs.remove(&base).expect("present");
        self.gone.push((base, seg.size, seg.write_base));
        self.released += 1;
        true
    }

    /// Takes `addr..addr + pages` out of the live runs, splitting runs it cuts.
    fn trim_runs(&mut self, addr: usize, pages: usize) {
        let end = addr + pages * self.page;
        let page = self.page;
        let mut kept = Vec::with_capacity(self.runs.len() + 1);
        for run in self.runs.drain(..) {
            let run_end = run.addr + run.pages * page;
            if run_end <= addr || end <= run.addr {
                kept.push(run);
                continue;
            }
            if run.addr < addr {
                kept.push(PageRun {
                    pages: (addr - run.addr) / page,
                    ..run
                });
            }
            if end < run_end {
                kept.push(PageRun {
                    addr: end,
                    write_addr: run.write_addr + (end - run.addr),
                    pages: (run_end - end) / page,
                    ..run
                });
            }
        }
        self.runs = kept;
    }

    /// The stats the allocator must report.
    fn expected_stats(&self) -> PageAllocatorStats {
        let page = self.page;
        let mut stats = PageAllocatorStats::default();
        for seg in self.segs.values() {
            stats.reserved_bytes += seg.size;
            let backed = seg.allocated() - seg.parked() + seg.free();
            let area = if seg.area_committed {
                self.config.secondary_pages
            } else {
                0
            };
            stats.committed_bytes += (backed + area) * page;
            stats.used_bytes += seg.allocated() * page;
            stats.parked_bytes += seg.parked() * page;
            stats.free_bytes += seg.free() * page;
            stats.secondary_slots_used += seg.slots_used();
            stats.secondary_slots_total += seg.slots.len();
            let counts = &mut stats.segments;
            match (seg.large, seg.list()) {
                (true, _) => counts.large += 1,
                (false, Some(SegmentList::Partial)) => counts.partial += 1,
                (false, Some(SegmentList::Full)) => counts.full += 1,
                (false, Some(SegmentList::Empty)) => counts.empty += 1,
                (false, Some(SegmentList::Decommitted)) => counts.decommitted += 1,
                (false, None) => panic!("the model kept a segment with nothing in use"),
            }
        }
        stats.segments_created = self.created;
        stats.segments_released = self.released;
        stats.decommitted_pages = self.decommitted_pages;
        stats.protect_calls = self.protect_calls;
        if self.strategy.protect_makes_syscall() {
            stats.protect_syscalls = self.protect_calls;
        } else {
            stats.protect_skipped = self.protect_calls;
        }
        stats
    }
}

// ---- what each OS lets a test see -----------------------------------------------------------

/// What a test can observe of an OS beyond the allocator's own answers.
trait Observed: Os + Sized {
    /// System calls made so far, where the OS counts them.
    fn calls(&self) -> Option<SyscallCounts>;
    /// Checks the page tables against the model.
    fn check_tables(pages: &PageAllocator<Self>, model: &Model);
    /// Checks, once everything was released, that nothing is left behind.
    fn check_all_released(pages: &PageAllocator<Self>, model: &Model);
}

impl Observed for SimOs {
    fn calls(&self) -> Option<SyscallCounts> {
        Some(self.syscalls())
    }

    fn check_tables(pages: &PageAllocator<SimOs>, model: &Model) {
        let os = pages.vm().os();
        for run in &model.runs {
            let Page::Allocated(protection) = model.first_page(run) else {
                continue; // parked
            };
            let table = match model.strategy {
                WxStrategy::Protect => protection,
                WxStrategy::MapJit | WxStrategy::Rwx => Protection::ExecuteReadWrite,
                WxStrategy::DualMap => Protection::ExecuteRead,
            };
            assert_eq!(
                os.protection_at(run.addr),
                Some(table),
                "page table at {run:?} holding {protection:?}"
            );
            assert_eq!(
                os.is_map_jit(run.addr),
                model.strategy == WxStrategy::MapJit
            );
        }
    }

    fn check_all_released(pages: &PageAllocator<SimOs>, _model: &Model) {
        let os = pages.vm().os();
        assert_eq!(os.mapped_pages(), 0, "pages left mapped");
        assert_eq!(os.shared_objects(), 0, "shared-memory objects left");
        assert_eq!(os.resident_frames(), 0, "frames left resident");
    }
}

// ---- the harness ------------------------------------------------------------------------------

struct Harness<O: Observed> {
    pages: PageAllocator<O>,
    model: Model,
}

impl<O: Observed> Harness<O> {
    fn new(pages: PageAllocator<O>) -> Harness<O> {
        let model = Model::new(&pages);
        Harness { pages, model }
    }

    fn calls(&self) -> Option<SyscallCounts> {
        self.pages.vm().os().calls()
    }

    /// System calls made since `before` (on an OS that counts them).
    fn calls_since(&self, before: Option<SyscallCounts>) -> Option<SyscallCounts> {
        Some(self.calls()?.since(&before?))
    }

    /// A call that failed must have changed nothing and, on the simulator, made no system
    /// call (every error here is found before the OS is asked).
    fn assert_unchanged(&self, before: &PageAllocatorStats, calls: Option<SyscallCounts>) {
        assert_eq!(
            self.pages.stats(),
            *before,
            "a failed call changed the stats"
        );
        if let Some(made) = self.calls_since(calls) {
            assert_eq!(made.total(), 0, "a failed call reached the OS");
        }
        self.pages.check_invariants().unwrap();
    }

    fn resolve(&self, addr: &Addr) -> (usize, usize) {
        let m = &self.model;
        match *addr {
            Addr::Run { run, skip } if !m.runs.is_empty() => {
                let run = m.runs[run % m.runs.len()];
                let skip = skip % run.pages;
                (run.addr + skip * m.page, run.pages - skip)
            }
            Addr::Released { run } if !m.released_runs.is_empty() => {
                let run = m.released_runs[run % m.released_runs.len()];
                (run.addr, run.pages)
            }
            Addr::SegmentPage { segment, page } if !m.segs.is_empty() => {
                let (base, seg) = m
                    .segs
                    .iter()
                    .nth(segment % m.segs.len())
                    .expect("non-empty");
                let total = seg.size / m.page;
                (base + page % (total + 1) * m.page, 1)
            }
            Addr::Foreign { which } => (m.foreign(which), 1),
            _ => (m.foreign(0), 1),
        }
    }

    /// A live run, whole (a foreign page if there is none).
    fn live_run(&self, which: usize) -> (usize, usize) {
        match self.model.runs.len() {
            0 => (self.model.foreign(2), 1),
            len => {
                let run = self.model.runs[which % len];
                (run.addr, run.pages)
            }
        }
    }

    fn resolve_range(&self, range: &Range) -> (usize, usize) {
        let (addr, rest) = self.resolve(&range.addr);
        let pages = match range.count {
            Count::Rest => rest,
            Count::Exact(n) => n,
            Count::RestPlus(k) => rest + k,
            Count::Zero => 0,
            Count::Huge(which) => self.model.huge(which),
        };
        (addr.wrapping_add(range.misalign), pages)
    }

    fn resolve_slot(&self, slot: &SlotRef) -> usize {
        let m = &self.model;
        match *slot {
            SlotRef::Live(i) if !m.slots.is_empty() => m.slots[i % m.slots.len()].addr,
            SlotRef::Misaligned(i) if !m.slots.is_empty() => m.slots[i % m.slots.len()].addr + 8,
            SlotRef::Released(i) if !m.released_slots.is_empty() => {
                m.released_slots[i % m.released_slots.len()].addr
            }
            SlotRef::At(ref addr) => self.resolve(addr).0,
            _ => m.foreign(0),
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Alloc(n) => self.alloc(*n),
            Op::AllocBad(count) => {
                let n = match count {
                    Count::Zero => 0,
                    Count::Huge(which) => self.model.huge(*which),
                    _ => unreachable!("only bad counts"),
                };
                self.alloc(n);
            }
            Op::AllocHuge {
                beyond_address_space,
            } => self.alloc_huge(*beyond_address_space),
            Op::ReleaseRun { run, discard } => {
                let (addr, pages) = self.live_run(*run);
                self.release(addr, pages, *discard);
            }
            Op::Release(range) => {
                let (addr, pages) = self.resolve_range(range);
                self.release(addr, pages, false);
            }
            Op::ProtectRun { run, new, expected } => {
                let (addr, pages) = self.live_run(*run);
                self.protect(addr, pages, *new, *expected);
            }
            Op::Protect {
                range,
                new,
                expected,
            } => {
                let (addr, pages) = self.resolve_range(range);
                self.protect(addr, pages, *new, *expected);
            }
            Op::DecommitFree => self.decommit_free(),
            Op::DecommitRun(i) => {
                let (addr, pages) = self.live_run(*i);
                self.decommit_pages(addr, pages);
            }
            Op::DecommitPages(range) => {
                let (addr, pages) = self.resolve_range(range);
                self.decommit_pages(addr, pages);
            }
            Op::AllocSecondary { at, times } => {
                let (addr, _) = self.resolve(at);
                for _ in 0..*times {
                    self.alloc_secondary(addr);
                }
            }
            Op::ReleaseSecondary(slot) => {
                let addr = self.resolve_slot(slot);
                self.release_secondary(addr);
            }
        }
    }

    fn alloc(&mut self, n: usize) {
        let before = self.pages.stats();
        let calls = self.calls();
        let expected = self.model.expect_alloc(n);
        let outcome = self.pages.alloc_pages(n);
        let placement = match expected {
            Err(err) => {
                assert_eq!(outcome, Err(err), "alloc_pages({n})");
                self.assert_unchanged(&before, calls);
                return;
            }
            Ok(placement) => placement,
        };
        let run = outcome.unwrap_or_else(|err| panic!("alloc_pages({n}) failed: {err}"));
        let made = self.calls_since(calls);
        let m = &mut self.model;
        let page = m.page;
        assert_eq!(run.pages, n, "{run:?}");
        assert_eq!(run.large, n > m.code_pages(), "{run:?}");
        assert!(run.addr.is_multiple_of(page), "{run:?}");
        // Fresh pages read as zero (except on MapJit, where the kernel may hand back old
        // contents); pages kept free hold whatever their last holder left.
        let mut fresh: Vec<usize> = Vec::new();
        match placement {
            Placement::Large | Placement::New => {
                let base = run.segment;
                assert_eq!(run.addr, base, "{run:?} starts its segment");
                assert!(base.is_multiple_of(m.granularity), "{run:?} is aligned");
                let code = if run.large { n } else { m.code_pages() };
                let size = (code + m.config.secondary_pages) * page;
                let overlaps = m
                    .segs
                    .iter()
                    .any(|(&b, s)| b < base + size && base < b + s.size);
                assert!(!overlaps, "{run:?} reuses a live segment's addresses");
                let region = self.pages.vm().region(base).expect("a region");
                assert_eq!(
                    (region.base, region.size, region.strategy),
                    (base, size, m.strategy)
                );
                let mut pages = vec![Page::Decommitted; code];
                pages[..n].fill(Page::Allocated(Protection::ReadWrite));
                let seg = Seg {
                    large: run.large,
                    size,
                    write_base: region.write_base,
                    pages,
                    slots: vec![false; m.slot_count()],
                    area_committed: false,
                    serial: m.created,
                    last_kept: 0,
                };
                m.segs.insert(base, seg);
                m.created += 1;
                fresh.extend(0..n);
            }
            Placement::Free { .. } | Placement::Commit { .. } => {
                let (base, first) = match placement {
                    Placement::Free { base, first } => (base, first),
                    _ => (run.segment, (run.addr - run.segment) / page),
                };
                assert_eq!(
                    (run.segment, run.addr, run.large),
                    (base, base + first * page, false),
                    "alloc_pages({n}) is placed as the model says ({placement:?})"
                );
                if let Placement::Commit { free } = placement {
                    let seg = &m.segs.get(&base).expect("a segment the model knows");
                    assert_eq!(seg.list(), Some(SegmentList::Decommitted), "{run:?}");
                    assert!(
                        seg.windows(n).contains(&(first, free)),
                        "alloc_pages({n}) takes a window with {free} free pages: {run:?}"
                    );
                }
                let seg = m.segs.get_mut(&base).expect("placed");
                let span = first..first + n;
                // Free pages come back as they were released, unless their protections
                // differ: then they are made read-write (a system call under Protect).
                let mut protection = Protection::ReadWrite;
                if let Placement::Free { .. } = placement {
                    let first_page = seg.pages[first];
                    let uniform = seg.pages[span.clone()].iter().all(|&p| p == first_page);
                    if let (true, Page::Free(kept)) = (uniform, first_page) {
                        protection = kept;
                    }
                    if let Some(made) = made {
                        let mprotect = u64::from(m.strategy == WxStrategy::Protect && !uniform);
                        assert_eq!(
                            (made.total(), made.get(SysCall::Mprotect)),
                            (mprotect, mprotect),
                            "system calls reusing free pages"
                        );
                    }
                }
                assert_eq!(run.protection, protection, "{run:?}");
                fresh.extend(span.clone().filter(|&i| seg.pages[i] == Page::Decommitted));
                seg.pages[span].fill(Page::Allocated(protection));
            }
        }
        let end = run.addr + n * page;
        for other in &m.runs {
            assert!(
                end <= other.addr || other.addr + other.pages * page <= run.addr,
                "{run:?} overlaps live {other:?}"
            );
        }
        for slot in &m.slots {
            assert!(
                end <= slot.addr || slot.addr + slot.size <= run.addr,
                "{run:?} overlaps live {slot:?}"
            );
        }
        assert_eq!(
            run.fresh,
            !fresh.is_empty(),
            "{run:?}: fresh says whether any page was committed by the call"
        );
        assert_eq!(
            Ok(run.write_addr),
            self.pages.vm().writable_address(run.addr),
            "{run:?}: the run says where it is written"
        );
        m.runs.push(run);

        let first = (run.addr - run.segment) / page;
        let vm = self.pages.vm();
        let _write = WriteScope::enter();
        // Pages may come back as they were released (execute-read, or no access at all):
        // opened for the look inside, and put back after.
        let bytes = n * page;
        if run.protection != Protection::ReadWrite {
            vm.protect(run.addr, bytes, Protection::ReadWrite).unwrap();
        }
        for i in 0..n {
            let addr = run.addr + i * page;
            let mut byte = [0xff];
            vm.read(addr, &mut byte).unwrap();
            if !fresh.contains(&(first + i)) {
                assert_eq!(byte, [0xcc], "kept page {addr:#x} lost its contents");
            } else if self.model.strategy != WxStrategy::MapJit {
                assert_eq!(byte, [0], "fresh page {addr:#x} is not zero");
            }
            // Mark every page, so the simulator holds frames that must be given back.
            vm.write(addr, &[0xcc]).unwrap();
        }
        if run.protection != Protection::ReadWrite {
            vm.protect(run.addr, bytes, run.protection).unwrap();
        }
    }

    /// A page count whose bytes fit but whose reservation cannot be made: the OS layer
    /// refuses and nothing changes. One that overflows with the secondary area and the
    /// alignment slack added is refused before any system call.
    fn alloc_huge(&mut self, beyond_address_space: bool) {
        let before = self.pages.stats();
        let calls = self.calls();
        let n = if beyond_address_space {
            (1 << 47) / self.model.page
        } else {
            self.model.max_pages()
        };
        let outcome = self.pages.alloc_pages(n);
        assert!(
            matches!(outcome, Err(Error::Vm(_))),
            "alloc_pages({n}): {outcome:?}"
        );
        assert_eq!(
            self.pages.stats(),
            before,
            "a failed call changed the stats"
        );
        if let Some(made) = self.calls_since(calls)
            && !beyond_address_space
        {
            assert_eq!(made.total(), 0, "an overflowing reservation reached the OS");
        }
        self.pages.check_invariants().unwrap();
    }

    fn release(&mut self, addr: usize, n: usize, discard: bool) {
        let before = self.pages.stats();
        let calls = self.calls();
        let expected = self.model.expect_release(addr, n);
        let outcome = if discard {
            self.pages.discard_pages(addr, n)
        } else {
            self.pages.release_pages(addr, n)
        };
        let (base, first) = match expected {
            Err(err) => {
                assert_eq!(outcome, Err(err), "release_pages({addr:#x}, {n})");
                self.assert_unchanged(&before, calls);
                return;
            }
            Ok(found) => found,
        };
        assert_eq!(outcome, Ok(()), "release_pages({addr:#x}, {n})");
        let m = &mut self.model;
        let large = m.segs[&base].large;
        m.released_runs.push(PageRun {
            addr,
            write_addr: m.segs[&base].write_base + (addr - base),
            pages: n,
            segment: base,
            large,
            fresh: false,
            protection: Protection::ReadWrite,
        });
        m.trim_runs(addr, n);
        if large {
            let seg = m.segs.remove(&base).expect("located");
            m.gone.push((base, seg.size, seg.write_base));
            m.released += 1;
            return;
        }
        let span = first..first + n;
        let parked = m.segs[&base].pages[span.clone()]
            .iter()
            .filter(|&&p| p == Page::Parked)
            .count();
        // Over the cap, other segments' free pages go first, those kept into longest ago
        // first, if they make all the room.
        let wanted = (m.free_pages() + n).saturating_sub(m.config.max_free_pages);
        let stale = m.free_pages() - m.segs[&base].free();
        let evicted = parked == 0 && !discard && wanted > 0 && stale >= wanted;
        if evicted {
            m.decommit_stale(base, wanted);
        }
        // Parked pages have no memory to keep: a run holding any is decommitted whole, as
        // is a discarded one.
        let keep = match parked {
            0 if !discard => m
                .config
                .max_free_pages
                .saturating_sub(m.free_pages())
                .min(n),
            _ => 0,
        };
        let seg = m.segs.get_mut(&base).expect("located");
        for i in span {
            seg.pages[i] = match seg.pages[i] {
                Page::Allocated(protection) if i < first + keep => Page::Free(protection),
                _ => Page::Decommitted,
            };
        }
        if keep > 0 {
            m.keeps += 1;
            seg.last_kept = m.keeps;
        }
        m.decommitted_pages += (n - keep - parked) as u64;
        let gone = m.maybe_release(base);
        if let Some(made) = self.calls_since(calls)
            && keep == n
            && !evicted
            && !gone
        {
            assert_eq!(made.total(), 0, "keeping released pages made system calls");
        }
    }

    fn decommit_pages(&mut self, addr: usize, n: usize) {
        let before = self.pages.stats();
        let calls = self.calls();
        let expected = self.model.locate(addr, n, true);
        let outcome = self.pages.decommit_pages(addr, n);
        let (base, first) = match expected {
            Err(err) => {
                assert_eq!(outcome, Err(err), "decommit_pages({addr:#x}, {n})");
                self.assert_unchanged(&before, calls);
                return;
            }
            Ok(found) => found,
        };
        assert_eq!(outcome, Ok(()), "decommit_pages({addr:#x}, {n})");
        let m = &mut self.model;
        let pages = &mut m.segs.get_mut(&base).expect("located").pages[first..first + n];
        let newly = pages.iter().filter(|&&p| p != Page::Parked).count();
        pages.fill(Page::Parked);
        m.decommitted_pages += newly as u64;
    }

    fn protect(&mut self, addr: usize, n: usize, new: Protection, expected: Option<Protection>) {
        let before = self.pages.stats();
        let calls = self.calls();
        let old = expected.unwrap_or_else(|| {
            let base = self.model.place(addr);
            let page = base.and_then(|base| {
                let seg = &self.model.segs[&base];
                seg.pages.get((addr - base) / self.model.page).copied()
            });
            match page {
                Some(Page::Allocated(protection)) => protection,
                _ => Protection::ReadWrite,
            }
        });
        let predicted = self.model.expect_protect(addr, n, new, old);
        let outcome = self.pages.protect_pages(addr, n, new, old);
        let (base, first) = match predicted {
            Err(err) => {
                assert_eq!(
                    outcome,
                    Err(err),
                    "protect_pages({addr:#x}, {n}, {new:?}, {old:?})"
                );
                self.assert_unchanged(&before, calls);
                return;
            }
            Ok(found) => found,
        };
        assert_eq!(
            outcome,
            Ok(()),
            "protect_pages({addr:#x}, {n}, {new:?}, {old:?})"
        );
        let made = self.calls_since(calls);
        let m = &mut self.model;
        m.segs.get_mut(&base).expect("located").pages[first..first + n].fill(Page::Allocated(new));
        m.protect_calls += 1;
        if let Some(made) = made {
            // Only Protect segments reach mprotect; MapJit, DualMap and Rwx make no call.
            let mprotect = u64::from(m.strategy == WxStrategy::Protect);
            assert_eq!(
                (made.get(SysCall::Mprotect), made.total()),
                (mprotect, mprotect),
                "system calls of protect_pages on {}",
                m.strategy
            );
        }
    }

    fn decommit_free(&mut self) {
        let calls = self.calls();
        let total = self.model.free_pages();
        assert_eq!(self.pages.decommit_free_pages(), Ok(total));
        let m = &mut self.model;
        let mut touched = Vec::new();
        for (&base, seg) in &mut m.segs {
            if seg.free() > 0 {
                for page in &mut seg.pages {
                    if matches!(page, Page::Free(_)) {
                        *page = Page::Decommitted;
                    }
                }
                touched.push(base);
            }
        }
        m.decommitted_pages += total as u64;
        for base in touched {
            m.maybe_release(base);
        }
        if let Some(made) = self.calls_since(calls)
            && total == 0
        {
            assert_eq!(made.total(), 0, "nothing to decommit made system calls");
        }
    }

    fn alloc_secondary(&mut self, addr: usize) {
        let before = self.pages.stats();
        let calls = self.calls();
        let expected = self.model.expect_alloc_secondary(addr);
        let can = self.pages.can_alloc_secondary(addr);
        assert_eq!(can, expected.is_ok(), "can_alloc_secondary({addr:#x})");
        let outcome = self.pages.alloc_secondary(addr);
        assert_eq!(outcome, expected, "alloc_secondary({addr:#x})");
        let Ok(slot) = outcome else {
            self.assert_unchanged(&before, calls);
            return;
        };
        let made = self.calls_since(calls);
        let m = &mut self.model;
        let seg = m.segs.get_mut(&slot.segment).expect("placed");
        if let Some(made) = made
            && seg.area_committed
        {
            assert_eq!(made.total(), 0, "alloc_secondary made system calls");
        }
        seg.area_committed = true;
        let index = (slot.addr - m.secondary_base(slot.segment)) / slot.size;
        m.segs.get_mut(&slot.segment).expect("placed").slots[index] = true;
        let end = slot.addr + slot.size;
        for run in &m.runs {
            assert!(
                end <= run.addr || run.addr + run.pages * m.page <= slot.addr,
                "{slot:?} overlaps live {run:?}"
            );
        }
        m.slots.push(slot);
        let _write = WriteScope::enter();
        self.pages.vm().write(slot.addr, &[0xab; 16]).unwrap();
    }

    fn release_secondary(&mut self, addr: usize) {
        let before = self.pages.stats();
        let calls = self.calls();
        let expected = self.model.expect_release_secondary(addr);
        let outcome = self.pages.release_secondary(addr);
        let (base, index) = match expected {
            Err(err) => {
                assert_eq!(outcome, Err(err), "release_secondary({addr:#x})");
                self.assert_unchanged(&before, calls);
                return;
            }
            Ok(found) => found,
        };
        assert_eq!(outcome, Ok(()), "release_secondary({addr:#x})");
        let m = &mut self.model;
        let seg = m.segs.get_mut(&base).expect("placed");
        let was = seg.list();
        seg.slots[index] = false;
        let now = seg.list();
        if !seg.large
            && was == Some(SegmentList::Full)
            && now.is_some_and(|l| l != SegmentList::Full)
        {
            m.state_changes += 1;
        }
        let at = m.slots.iter().position(|s| s.addr == addr).expect("live");
        let slot = m.slots.remove(at);
        m.released_slots.push(slot);
        let gone = m.maybe_release(base);
        if let Some(made) = self.calls_since(calls)
            && !gone
        {
            assert_eq!(made.total(), 0, "release_secondary made system calls");
        }
    }

    /// Everything the allocator reports must match the model.
    fn check(&self) {
        let pages = &self.pages;
        let m = &self.model;
        let page = m.page;
        if let Err(err) = pages.check_invariants() {
            panic!("invariants: {err}");
        }
        let stats = pages.stats();
        assert_eq!(stats, m.expected_stats(), "stats");
        let run_pages: usize = m.runs.iter().map(|r| r.pages).sum();
        assert_eq!(stats.used_bytes, run_pages * page, "used bytes");
        assert_eq!(stats.secondary_slots_used, m.slots.len(), "slots used");
        assert!(
            stats.free_bytes <= m.config.max_free_pages * page,
            "free bytes"
        );
        assert_eq!(
            pages.secondary_state_changes(),
            m.state_changes,
            "secondary_state_changes() counts segments leaving the full list because a slot \
             was freed"
        );

        // No two live runs overlap, and no run overlaps a slot.
        let mut spans: Vec<(usize, usize)> = m
            .runs
            .iter()
            .map(|r| (r.addr, r.addr + r.pages * page))
            .chain(m.slots.iter().map(|s| (s.addr, s.addr + s.size)))
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "live spans overlap: {pair:?}");
        }

        // Every live run is committed with the model's protection (or, parked, not).
        for run in &m.runs {
            let seg = &m.segs[&run.segment];
            let first = (run.addr - run.segment) / page;
            let mut i = 0;
            while i < run.pages {
                let held = seg.pages[first + i];
                assert!(held.is_held(), "model: {run:?} holds a page it does not");
                let same = seg.pages[first + i..first + run.pages]
                    .iter()
                    .take_while(|&&p| p == held)
                    .count();
                let info = pages.vm().query(run.addr + i * page).unwrap();
                assert_eq!(info.state, held.state(), "page {i} of {run:?}");
                assert!(info.size >= same * page, "{run:?}: {info:?}");
                i += same;
            }
        }

        // Every page of every segment is in the state the model says, and each segment on
        // the list its state calls for.
        for (&base, seg) in &m.segs {
            let mut i = 0;
            while i < seg.pages.len() {
                let state = seg.pages[i].state();
                let same = seg.pages[i..]
                    .iter()
                    .take_while(|&&p| p == seg.pages[i])
                    .count();
                let info = pages.vm().query(base + i * page).unwrap();
                assert_eq!(
                    info.state, state,
                    "page {i} of {base:#x}: {:?}",
                    seg.pages[i]
                );
                assert!(info.size >= same * page, "page {i} of {base:#x}: {info:?}");
                i += same;
            }
            // And handed out exactly where the model holds it.
            for (i, held) in seg.pages.iter().enumerate() {
                let addr = base + i * page;
                assert_eq!(
                    pages.is_allocated(addr, 1),
                    held.is_held(),
                    "page {addr:#x}"
                );
            }
            let secondary = pages.vm().query(m.secondary_base(base)).unwrap();
            let area = if seg.area_committed {
                PageState::Committed(Protection::ReadWrite)
            } else {
                PageState::Reserved
            };
            assert_eq!(secondary.state, area, "secondary area of {base:#x}");
            if seg.area_committed {
                assert_eq!(secondary.size, m.config.secondary_pages * page);
            }
            let list = if seg.large { None } else { seg.list() };
            assert_eq!(pages.segment_list(base), list, "list of {base:#x}");
            assert_eq!(pages.can_alloc_secondary(base), !seg.exhausted());
        }
        O::check_tables(pages, m);
    }

    fn run(&mut self, ops: &[Op]) {
        self.check();
        for op in ops {
            self.step(op);
            self.check();
        }
        // Slots first (they keep segments and large allocations alive), then runs, then
        // the free pages kept.
        while let Some(slot) = self.model.slots.first() {
            self.release_secondary(slot.addr);
            self.check();
        }
        while let Some(run) = self.model.runs.first() {
            self.release(run.addr, run.pages, false);
            self.check();
        }
        self.decommit_free();
        self.check();
        assert!(self.model.segs.is_empty(), "{:?}", self.model.segs);
        let stats = self.pages.stats();
        assert_eq!(stats.reserved_bytes, 0);
        assert_eq!(stats.committed_bytes, 0);
        assert_eq!(stats.segments_created, stats.segments_released);
        assert_eq!(self.pages.vm().stats().regions, 0);
        O::check_all_released(&self.pages, &self.model);
    }
}

// ---- configurations ---------------------------------------------------------------------------

/// Small segments that keep free pages: reuse, empty segments, large segments and secondary
/// exhaustion (2 slots a segment) all happen often.
fn small(page: usize) -> PageAllocatorConfig {
    PageAllocatorConfig {
        segment_pages: 8,
        secondary_pages: 1,
        secondary_slot_size: page / 2,
        max_free_pages: 3,
    }
}

/// Segments of 3 code pages that keep more free pages than a segment has: whole segments
/// stay committed (the empty list), next to partial and decommitted ones with free pages.
fn tiny(page: usize) -> PageAllocatorConfig {
    PageAllocatorConfig {
        segment_pages: 4,
        secondary_pages: 1,
        secondary_slot_size: page / 2,
        max_free_pages: 5,
    }
}

const SIM_OPS: usize = if cfg!(miri) { 8 } else { 50 };

fn run_sim(os: SimOs, strategy: Option<WxStrategy>, config: PageAllocatorConfig, ops: &[Op]) {
    let vm = match strategy {
        Some(strategy) => VirtualAlloc::with_strategy(os, strategy).unwrap(),
        None => VirtualAlloc::new(os),
    };
    let pages = PageAllocator::new(vm, config).unwrap();
    Harness::new(pages).run(ops);
}

const APPLE_PAGE: usize = 16 * 1024;
const LINUX_PAGE: usize = 4096;

/// One proptest per machine, strategy and configuration.
macro_rules! sim_tests {
    ($($name:ident: $os:expr, $strategy:expr, $config:expr;)*) => {
        proptest! {
            #![proptest_config(sim_proptest_config(64, 2))]
            $(
                #[test]
                fn $name(ops in ops($config, SIM_OPS)) {
                    run_sim($os, $strategy, $config, &ops);
                }
            )*
        }
    };
}

const DEFAULT: PageAllocatorConfig = PageAllocatorConfig {
    segment_pages: 32,
    secondary_pages: 2,
    secondary_slot_size: 64,
    max_free_pages: 0,
};

sim_tests! {
    apple_map_jit_default: SimOs::apple(), None, DEFAULT;
    apple_map_jit_small: SimOs::apple(), None, small(APPLE_PAGE);
    apple_map_jit_tiny: SimOs::apple(), None, tiny(APPLE_PAGE);
    linux_dual_map_default: SimOs::linux(), Some(WxStrategy::DualMap), DEFAULT;
    linux_dual_map_small: SimOs::linux(), Some(WxStrategy::DualMap), small(LINUX_PAGE);
    linux_dual_map_tiny: SimOs::linux(), Some(WxStrategy::DualMap), tiny(LINUX_PAGE);
    linux_protect_default: SimOs::linux(), Some(WxStrategy::Protect), DEFAULT;
    linux_protect_small: SimOs::linux(), Some(WxStrategy::Protect), small(LINUX_PAGE);
    linux_protect_tiny: SimOs::linux(), Some(WxStrategy::Protect), tiny(LINUX_PAGE);
    linux_rwx_default: SimOs::linux(), Some(WxStrategy::Rwx), DEFAULT;
    linux_rwx_small: SimOs::linux(), Some(WxStrategy::Rwx), small(LINUX_PAGE);
    linux_rwx_tiny: SimOs::linux(), Some(WxStrategy::Rwx), tiny(LINUX_PAGE);
}

/// The simulated machines are the ones the tests above are named after, and `DEFAULT` is
/// the default configuration.
#[test]
fn the_simulated_machines_are_the_intended_ones() {
    assert_eq!(DEFAULT, PageAllocatorConfig::default());
    let apple = VirtualAlloc::new(SimOs::apple());
    assert_eq!(
        (apple.strategy(), apple.page_size()),
        (WxStrategy::MapJit, APPLE_PAGE)
    );
    let linux = VirtualAlloc::new(SimOs::linux());
    assert_eq!(linux.page_size(), LINUX_PAGE);
}

// ---- regressions ----------------------------------------------------------------------------------

/// `secondary_state_changes()` counts segments that leave the full list because a secondary
/// slot was freed (ChakraCore's `secondaryAllocStateChangedCount`): what tells a heap that
/// pages it parked as "full" for want of unwind slots may allocate again. It once counted
/// every move off the full list, new segments and page releases included.
#[test]
fn secondary_state_changes_counts_only_slot_releases() {
    let pages = PageAllocator::new(VirtualAlloc::new(SimOs::linux()), DEFAULT).unwrap();
    let first = pages.alloc_pages(1).unwrap();
    assert_eq!(
        pages.secondary_state_changes(),
        0,
        "a new segment is no slot release"
    );
    let rest = pages.alloc_pages(29).unwrap();
    assert_eq!(pages.segment_list(first.addr), Some(SegmentList::Full));
    pages.release_pages(rest.addr, 29).unwrap();
    assert_eq!(
        pages.secondary_state_changes(),
        0,
        "released pages free no secondary slot"
    );
    pages.release_pages(first.addr, 1).unwrap();
}

// ---- the real OS ----------------------------------------------------------------------------------

#[cfg(all(target_os = "linux", not(miri)))]
mod native {
    use super::*;
    use codeheap_test_support::proptest_config;
    use codeheap_virtual_alloc::NativeOs;
    use std::sync::Mutex;

    /// Native cases run one at a time, so the mappings seen in `/proc/self/maps` at our
    /// addresses are ours (the simulator maps nothing executable or shared).
    static NATIVE: Mutex<()> = Mutex::new(());

    use codeheap_test_support::maps::{Mapping, proc_maps};

    fn perms(protection: Protection, strategy: WxStrategy) -> &'static str {
        match (strategy, protection) {
            (WxStrategy::DualMap, _) => "r-xs",
            (_, Protection::NoAccess) => "---p",
            (_, Protection::ReadOnly) => "r--p",
            (_, Protection::ReadWrite) => "rw-p",
            (_, Protection::ExecuteRead) => "r-xp",
            (_, Protection::ExecuteReadWrite) => "rwxp",
        }
    }

    /// Mappings that are a segment of ours left behind at `(base, size, write_base)`: a
    /// whole reservation at its base with the permissions a segment has, or any shared
    /// mapping over either view of a dual-mapped one.
    fn leftovers(maps: &[Mapping], gone: &(usize, usize, usize)) -> Vec<Mapping> {
        let &(base, size, write_base) = gone;
        let overlaps = |m: &Mapping, at: usize| m.start < at + size && at < m.end;
        maps.iter()
            .filter(|m| {
                let whole = m.start == base
                    && m.end == base + size
                    && ["r-xp", "---p", "r-xs", "---s"].contains(&m.perms.as_str());
                let shared = m.perms.ends_with('s')
                    && (overlaps(m, base) || (write_base != base && overlaps(m, write_base)));
                whole || shared
            })
            .cloned()
            .collect()
    }

    impl Observed for NativeOs {
        fn calls(&self) -> Option<SyscallCounts> {
            None
        }

        fn check_tables(_pages: &PageAllocator<NativeOs>, model: &Model) {
            let maps = proc_maps();
            for run in &model.runs {
                let held = model.first_page(run);
                let expected = match held {
                    Page::Allocated(protection) => perms(protection, model.strategy),
                    _ if model.strategy == WxStrategy::DualMap => "---s",
                    _ => "---p",
                };
                let found = maps
                    .iter()
                    .find(|m| m.start <= run.addr && run.addr < m.end)
                    .map(|m| m.perms.as_str());
                assert_eq!(found, Some(expected), "{run:?} holding {held:?}");
            }
            // Segments given back are unmapped, unless the OS has since handed the
            // addresses to one of our live segments.
            let live = |at: usize, size: usize| {
                model.segs.iter().any(|(&base, seg)| {
                    let views = [base, seg.write_base];
                    views.iter().any(|&v| v < at + size && at < v + seg.size)
                })
            };
            for gone in &model.gone {
                if live(gone.0, gone.1) || live(gone.2, gone.1) {
                    continue;
                }
                let left = leftovers(&maps, gone);
                assert!(left.is_empty(), "segment {gone:x?} left behind: {left:x?}");
            }
        }

        fn check_all_released(_pages: &PageAllocator<NativeOs>, model: &Model) {
            let maps = proc_maps();
            for gone in &model.gone {
                let left = leftovers(&maps, gone);
                assert!(left.is_empty(), "segment {gone:x?} left behind: {left:x?}");
            }
        }
    }

    const NATIVE_OPS: usize = 30;

    fn run_native(strategy: WxStrategy, config: PageAllocatorConfig, ops: &[Op]) {
        let _serial = NATIVE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let vm = VirtualAlloc::with_strategy(NativeOs::new(), strategy)
            .unwrap_or_else(|err| panic!("{strategy} must be available on Linux: {err}"));
        let mut harness = Harness::new(PageAllocator::new(vm, config).unwrap());
        harness.run(ops);
        let Harness { pages, model } = harness;
        drop(pages);
        let maps = proc_maps();
        for gone in &model.gone {
            let left = leftovers(&maps, gone);
            assert!(
                left.is_empty(),
                "segment {gone:x?} mapped after the drop: {left:x?}"
            );
        }
    }

    fn page() -> usize {
        NativeOs::new().page_size()
    }

    macro_rules! native_tests {
        ($($name:ident: $strategy:expr, $config:expr;)*) => {
            proptest! {
                #![proptest_config(proptest_config(16, 16))]
                $(
                    #[test]
                    fn $name(ops in ops($config, NATIVE_OPS)) {
                        run_native($strategy, $config, &ops);
                    }
                )*
            }
        };
    }

    native_tests! {
        native_dual_map_default: WxStrategy::DualMap, DEFAULT;
        native_dual_map_small: WxStrategy::DualMap, small(page());
        native_dual_map_tiny: WxStrategy::DualMap, tiny(page());
        native_protect_default: WxStrategy::Protect, DEFAULT;
        native_protect_small: WxStrategy::Protect, small(page());
        native_protect_tiny: WxStrategy::Protect, tiny(page());
    }
}
