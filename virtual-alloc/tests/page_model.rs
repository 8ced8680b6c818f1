//! `VirtualAlloc` against a model of page states, under random sequences of operations, on
//! every backend: the simulated macOS (MapJit), the simulated Linux (DualMap, Protect, Rwx),
//! the simulated Linux on aarch64 (DualMap) and the real OS (DualMap, Protect, Rwx).
//!
//! The model knows, per region, each page's state (reserved, or committed with a protection)
//! and the bytes written to it. Before each operation it computes the exact expected result,
//! errors included; after each one it checks the statistics, `query` of every page, the
//! registry answers and what the OS shows (the simulator's page table and system-call counts,
//! or `/proc/self/maps`). At the end the allocator is dropped and nothing may be left.
//!
//! The model and driver are written once, generic over `O: Os`.
//!
//! Two bugs it found are pinned as regression tests at the end of the file:
//! `flush_instruction_cache` reaching the OS on a PROT_NONE page, and a near-`usize::MAX`
//! reservation exhausting the host's memory on the simulated DualMap backend.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use codeheap_test_support::sim_proptest_config;
use codeheap_virtual_alloc::sim::{SimOs, SimRules, SyscallCounts};
use codeheap_virtual_alloc::{
    Access, Arch, Error, MemoryInfo, Os, PageState, Protection, RegionInfo, Result, SysCall,
    ThreadMode, VirtualAlloc, VirtualAllocStats, WriteScope, WxStrategy,
};
use proptest::prelude::*;

// ---- the model -----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Page {
    /// `None`: reserved only.
    committed: Option<Protection>,
    /// Bytes written since the page was last decommitted, by offset in the page.
    written: BTreeMap<usize, u8>,
    /// Whether the bytes not in `written` are known to be zero (not after a MapJit
    /// decommit, whose contents are unspecified).
    zero_elsewhere: bool,
    /// Whether the simulator holds a frame for the page (written since its last decommit).
    resident: bool,
}

impl Page {
    fn new() -> Page {
        Page {
            committed: None,
            written: BTreeMap::new(),
            zero_elsewhere: true,
            resident: false,
        }
    }

    fn state(&self) -> PageState {
        self.committed
            .map_or(PageState::Reserved, PageState::Committed)
    }

    fn byte(&self, offset: usize) -> Option<u8> {
        match self.written.get(&offset) {
            Some(&byte) => Some(byte),
            None => self.zero_elsewhere.then_some(0),
        }
    }
}

#[derive(Debug, Clone)]
struct ModelRegion {
    info: RegionInfo,
    live: bool,
    pages: Vec<Page>,
}

impl ModelRegion {
    fn contains(&self, addr: usize) -> bool {
        addr >= self.info.base && addr - self.info.base < self.info.size
    }
}

#[derive(Debug)]
struct Model {
    page_size: usize,
    strategy: WxStrategy,
    arch: Arch,
    /// Every region ever reserved, in order; released ones stay with `live == false`.
    regions: Vec<ModelRegion>,
    /// The counters of `VirtualAllocStats` (its first three fields are computed).
    counters: VirtualAllocStats,
}

type Expected<T> = core::result::Result<T, Error>;

impl Model {
    fn new(page_size: usize, strategy: WxStrategy, arch: Arch) -> Model {
        Model {
            page_size,
            strategy,
            arch,
            regions: Vec::new(),
            counters: VirtualAllocStats::default(),
        }
    }

    fn live(&self) -> impl Iterator<Item = &ModelRegion> {
        self.regions.iter().filter(|r| r.live)
    }

    fn expected_stats(&self) -> VirtualAllocStats {
        let committed_pages: usize = self
            .live()
            .map(|r| r.pages.iter().filter(|p| p.committed.is_some()).count())
            .sum();
        VirtualAllocStats {
            regions: self.live().count(),
            reserved_bytes: self.live().map(|r| r.info.size).sum(),
            committed_bytes: committed_pages * self.page_size,
            ..self.counters
        }
    }

    /// The live region holding `addr`, searched naively.
    fn region_of(&self, addr: usize) -> Option<usize> {
        self.regions.iter().position(|r| r.live && r.contains(addr))
    }

    /// What `lookup_range` answers: the one live region holding `addr..addr + size`.
    fn region_for(&self, addr: usize, size: usize) -> Expected<usize> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let index = self.region_of(addr).ok_or(Error::NotInRegion { addr })?;
        let info = self.regions[index].info;
        match addr.checked_add(size) {
            Some(end) if end <= info.base + info.size => Ok(index),
            _ => Err(Error::RangeOutsideRegion { addr, size }),
        }
    }

    /// A page-granular request: size not zero, rounded up to pages, address page-aligned.
    fn page_request(&self, addr: usize, size: usize) -> Expected<usize> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let rounded = size
            .checked_next_multiple_of(self.page_size)
            .ok_or(Error::SizeOverflow { size })?;
        if !addr.is_multiple_of(self.page_size) {
            return Err(Error::Unaligned {
                addr,
                align: self.page_size,
            });
        }
        Ok(rounded)
    }

    fn pages_of(&self, index: usize, addr: usize, size: usize) -> Range<usize> {
        let base = self.regions[index].info.base;
        (addr - base) / self.page_size..(addr + size - 1 - base) / self.page_size + 1
    }

    fn page_addr(&self, index: usize, page: usize) -> usize {
        self.regions[index].info.base + page * self.page_size
    }

    fn check_wx(&self, protection: Protection) -> Expected<()> {
        if protection == Protection::ExecuteReadWrite && self.strategy != WxStrategy::Rwx {
            Err(Error::WxViolation {
                strategy: self.strategy,
                protection,
            })
        } else {
            Ok(())
        }
    }

    fn require_committed(&self, index: usize, pages: Range<usize>) -> Expected<()> {
        for page in pages {
            if self.regions[index].pages[page].committed.is_none() {
                return Err(Error::NotCommitted {
                    addr: self.page_addr(index, page),
                });
            }
        }
        Ok(())
    }

    /// Every page committed and, on `Protect` regions only, allowing `access`.
    fn require_access(&self, index: usize, pages: Range<usize>, access: Access) -> Expected<()> {
        self.require_committed(index, pages.clone())?;
        if self.strategy != WxStrategy::Protect {
            return Ok(());
        }
        for page in pages {
            let protection = self.regions[index].pages[page]
                .committed
                .expect("committed");
            if !protection.allows(access) {
                return Err(Error::AccessDenied {
                    addr: self.page_addr(index, page),
                    protection,
                    access,
                });
            }
        }
        Ok(())
    }

    /// A byte access of `len` bytes at `addr`: the region index.
    fn byte_access(&self, addr: usize, len: usize, access: Access) -> Expected<usize> {
        let index = self.region_for(addr, len)?;
        self.require_access(index, self.pages_of(index, addr, len), access)?;
        Ok(index)
    }

    fn query(&self, addr: usize) -> Expected<MemoryInfo> {
        let index = self.region_for(addr, 1)?;
        let region = &self.regions[index];
        let first = (addr - region.info.base) / self.page_size;
        let state = region.pages[first].state();
        let run = region.pages[first..]
            .iter()
            .take_while(|p| p.state() == state)
            .count();
        Ok(MemoryInfo {
            allocation_base: region.info.base,
            allocation_size: region.info.size,
            base: self.page_addr(index, first),
            size: run * self.page_size,
            state,
            strategy: region.info.strategy,
        })
    }

    /// `query` of each run of same-state pages from `addr`'s page to the one holding the
    /// range's last byte, the last run cut there.
    fn query_range(&self, addr: usize, size: usize) -> Expected<Vec<MemoryInfo>> {
        self.region_for(addr, size)?;
        let end = (addr + size).next_multiple_of(self.page_size);
        let mut at = addr - addr % self.page_size;
        let mut runs = Vec::new();
        while at < end {
            let mut info = self.query(at)?;
            info.size = info.size.min(end - at);
            at += info.size;
            runs.push(info);
        }
        Ok(runs)
    }

    fn write_bytes(&mut self, index: usize, addr: usize, bytes: &[u8]) {
        let page_size = self.page_size;
        let region = &mut self.regions[index];
        for (i, &byte) in bytes.iter().enumerate() {
            let offset = addr + i - region.info.base;
            let page = &mut region.pages[offset / page_size];
            page.written.insert(offset % page_size, byte);
            page.resident = true;
        }
    }

    fn expected_byte(&self, index: usize, addr: usize) -> Option<u8> {
        let region = &self.regions[index];
        let offset = addr - region.info.base;
        region.pages[offset / self.page_size].byte(offset % self.page_size)
    }
}

// ---- operations ----------------------------------------------------------------------------

/// Which region an operation aims at.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The n-th live region (modulo), or any region if none is live.
    Live(usize),
    /// The n-th region ever reserved, released ones included.
    Any(usize),
    /// The region reserved last.
    Last,
}

/// Where, relative to the picked region.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Page `page % pages` of the region.
    Page,
    /// The page below the base (outside: regions are 64 KiB-aligned).
    BelowBase,
    /// One past the end.
    PastEnd,
    /// Address zero.
    Null,
    /// The last page of the address space.
    Top,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    pick: Pick,
    page: usize,
    place: Place,
}

/// A byte offset in a page: from its start, or `k` bytes before its end.
#[derive(Debug, Clone, Copy)]
enum ByteOffset {
    Start(usize),
    End(usize),
}

/// The size of a page-granular request.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// `n` pages (clamped to the region's end if `clamp`), minus `shave % page` bytes.
    Pages {
        n: usize,
        clamp: bool,
        shave: usize,
    },
    Zero,
    /// `usize::MAX - shave`: overflows when rounded, or runs past every region.
    Huge {
        shave: usize,
    },
}

/// What `protect` is told to expect.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Nothing,
    /// The first page's current protection (if committed).
    Current,
    Other(Protection),
}

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        pages: usize,
        shave: usize,
    },
    ReserveBad {
        size: usize,
    },
    Commit {
        at: Loc,
        misalign: usize,
        span: Span,
        protection: Protection,
    },
    Decommit {
        at: Loc,
        misalign: usize,
        span: Span,
    },
    Release {
        at: Loc,
        inside: bool,
        misalign: usize,
    },
    Protect {
        at: Loc,
        misalign: usize,
        span: Span,
        new: Protection,
        expect: Expect,
    },
    Write {
        at: Loc,
        offset: ByteOffset,
        len: usize,
        byte: u8,
        scoped: bool,
    },
    Fill {
        at: Loc,
        offset: ByteOffset,
        len: usize,
        pattern: Vec<u8>,
    },
    Read {
        at: Loc,
        offset: ByteOffset,
        len: usize,
        scoped: bool,
    },
    Query {
        at: Loc,
        offset: ByteOffset,
    },
    Flush {
        at: Loc,
        offset: ByteOffset,
        span: Span,
    },
    EntryPoint {
        at: Loc,
        offset: ByteOffset,
        scoped: bool,
    },
}

fn loc() -> impl Strategy<Value = Loc> {
    let pick = prop_oneof![
        9 => (0..64usize).prop_map(Pick::Live),
        1 => (0..64usize).prop_map(Pick::Any),
    ];
    let place = prop_oneof![
        28 => Just(Place::Page),
        1 => Just(Place::BelowBase),
        1 => Just(Place::PastEnd),
        1 => Just(Place::Null),
        1 => Just(Place::Top),
    ];
    (pick, 0..8usize, place).prop_map(|(pick, page, place)| Loc { pick, page, place })
}

fn misalign() -> impl Strategy<Value = usize> {
    prop_oneof![9 => Just(0usize), 1 => 1..4096usize]
}

fn byte_offset() -> impl Strategy<Value = ByteOffset> {
    prop_oneof![
        3 => (0..64usize).prop_map(ByteOffset::Start),
        1 => (1..=64usize).prop_map(ByteOffset::End),
    ]
}

fn byte_len() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 12 => 1..=16usize, 4 => 17..=64usize]
}

fn span() -> impl Strategy<Value = Span> {
    prop_oneof![
        16 => (1..=8usize, prop::bool::weighted(0.8), prop_oneof![Just(0usize), 0..4096usize])
            .prop_map(|(n, clamp, shave)| Span::Pages { n, clamp, shave }),
        1 => Just(Span::Zero),
        1 => (0..0x10000usize).prop_map(|shave| Span::Huge { shave }),
    ]
}

fn protection() -> impl Strategy<Value = Protection> {
    prop_oneof![
        2 => Just(Protection::NoAccess),
        2 => Just(Protection::ReadOnly),
        3 => Just(Protection::ReadWrite),
        3 => Just(Protection::ExecuteRead),
        1 => Just(Protection::ExecuteReadWrite),
    ]
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::Nothing),
        2 => Just(Expect::Current),
        1 => protection().prop_map(Expect::Other),
    ]
}

/// A region to start from: reserved and, mostly, committed whole.
fn setup() -> impl Strategy<Value = Vec<Op>> {
    (
        1..=8usize,
        0..4096usize,
        protection(),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(pages, shave, protection, commit)| {
            let mut ops = vec![Op::Reserve { pages, shave }];
            if commit {
                ops.push(Op::Commit {
                    at: Loc {
                        pick: Pick::Last,
                        page: 0,
                        place: Place::Page,
                    },
                    misalign: 0,
                    span: Span::Pages {
                        n: pages,
                        clamp: true,
                        shave,
                    },
                    protection,
                });
            }
            ops
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1..=8usize, 0..4096usize).prop_map(|(pages, shave)| Op::Reserve { pages, shave }),
        1 => prop_oneof![Just(0usize), Just(usize::MAX)].prop_map(|size| Op::ReserveBad { size }),
        6 => (loc(), misalign(), span(), protection()).prop_map(
            |(at, misalign, span, protection)| Op::Commit { at, misalign, span, protection }
        ),
        2 => (loc(), misalign(), span())
            .prop_map(|(at, misalign, span)| Op::Decommit { at, misalign, span }),
        1 => (loc(), prop::bool::weighted(0.25), misalign())
            .prop_map(|(at, inside, misalign)| Op::Release { at, inside, misalign }),
        6 => (loc(), misalign(), span(), protection(), expect()).prop_map(
            |(at, misalign, span, new, expect)| Op::Protect { at, misalign, span, new, expect }
        ),
        5 => (loc(), byte_offset(), byte_len(), any::<u8>(), prop::bool::weighted(0.9)).prop_map(
            |(at, offset, len, byte, scoped)| Op::Write { at, offset, len, byte, scoped }
        ),
        1 => (loc(), byte_offset(), byte_len(), prop::collection::vec(any::<u8>(), 0..=3))
            .prop_map(|(at, offset, len, pattern)| Op::Fill { at, offset, len, pattern }),
        4 => (loc(), byte_offset(), byte_len(), any::<bool>())
            .prop_map(|(at, offset, len, scoped)| Op::Read { at, offset, len, scoped }),
        2 => (loc(), byte_offset()).prop_map(|(at, offset)| Op::Query { at, offset }),
        2 => (loc(), byte_offset(), span())
            .prop_map(|(at, offset, span)| Op::Flush { at, offset, span }),
        1 => (loc(), byte_offset(), prop::bool::weighted(0.2))
            .prop_map(|(at, offset, scoped)| Op::EntryPoint { at, offset, scoped }),
    ]
}

/// `len` bytes of `pattern` repeated, a last partial repetition zeroed (what `fill` writes).
fn fill_bytes(len: usize, pattern: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0; len];
    if !pattern.is_empty() {
        let whole = len - len % pattern.len();
        for (i, byte) in bytes[..whole].iter_mut().enumerate() {
            *byte = pattern[i % pattern.len()];
        }
    }
    bytes
}

impl Model {
    /// The picked region's index, if any region exists.
    fn pick(&self, pick: Pick) -> Option<usize> {
        let live: Vec<usize> = (0..self.regions.len())
            .filter(|&i| self.regions[i].live)
            .collect();
        match pick {
            Pick::Live(n) if !live.is_empty() => Some(live[n % live.len()]),
            Pick::Live(n) | Pick::Any(n) => {
                (!self.regions.is_empty()).then(|| n % self.regions.len())
            }
            Pick::Last => self.regions.len().checked_sub(1),
        }
    }

    /// The page-aligned anchor of `loc` and the page index in the picked region.
    fn anchor(&self, loc: Loc) -> (usize, Option<(usize, usize)>) {
        let page_size = self.page_size;
        let Some(index) = self.pick(loc.pick) else {
            return (page_size * (loc.page + 1), None);
        };
        let info = self.regions[index].info;
        let page = loc.page % self.regions[index].pages.len();
        let addr = match loc.place {
            Place::Page => info.base + page * page_size,
            Place::BelowBase => info.base - page_size,
            Place::PastEnd => info.base + info.size,
            Place::Null => 0,
            Place::Top => usize::MAX & !(page_size - 1),
        };
        (addr, Some((index, page)))
    }

    fn byte_addr(&self, loc: Loc, offset: ByteOffset) -> usize {
        let offset = match offset {
            ByteOffset::Start(k) => k,
            ByteOffset::End(k) => self.page_size - k,
        };
        self.anchor(loc).0 + offset
    }

    fn span_size(&self, span: Span, at: Option<(usize, usize)>) -> usize {
        match span {
            Span::Pages { n, clamp, shave } => {
                let n = match at {
                    Some((index, page)) if clamp => n.min(self.regions[index].pages.len() - page),
                    _ => n,
                };
                n * self.page_size - shave % self.page_size
            }
            Span::Zero => 0,
            Span::Huge { shave } => usize::MAX - shave,
        }
    }

    /// Address and size of a page-granular operation.
    fn page_op(&self, loc: Loc, misalign: usize, span: Span) -> (usize, usize) {
        let (anchor, at) = self.anchor(loc);
        (anchor + misalign % self.page_size, self.span_size(span, at))
    }
}

// ---- what the OS shows ---------------------------------------------------------------------

use codeheap_test_support::maps::{Mapping as MapLine, proc_maps};

fn overlapping(maps: &[MapLine], range: Range<usize>) -> Vec<MapLine> {
    maps.iter()
        .filter(|m| m.start < range.end && range.start < m.end)
        .cloned()
        .collect()
}

/// The mappings that make up a region (both views of a dual-mapped one).
fn region_lines(maps: &[MapLine], info: &RegionInfo) -> Vec<MapLine> {
    let mut lines = overlapping(maps, info.base..info.base + info.size);
    if info.write_base != info.base {
        lines.extend(overlapping(
            maps,
            info.write_base..info.write_base + info.size,
        ));
    }
    lines
}

/// Checks that the mappings a region had are gone: none of the exact lines is left, and no
/// line spans exactly `base..base + size`. (Another test may map the freed range again, but
/// not with the very same line.)
fn assert_lines_gone(before: &[MapLine], info: &RegionInfo) {
    let after = proc_maps();
    for line in before {
        assert!(
            !after.contains(line),
            "mapping of released region {info:?} is still there: {}",
            line.line
        );
    }
    for base in [info.base, info.write_base] {
        assert!(
            !after
                .iter()
                .any(|m| m.start == base && m.end == base + info.size),
            "a mapping of exactly {base:#x}+{:#x} is still there",
            info.size
        );
    }
}

/// Open descriptors of codeheap memfds in this process.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn codeheap_memfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd is readable")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("/memfd:codeheap"))
        .count()
}

fn perms_of(protection: Protection, shared: bool) -> String {
    let flag = |on: bool, c: char| if on { c } else { '-' };
    let mut perms = String::new();
    perms.push(flag(protection.is_readable(), 'r'));
    perms.push(flag(protection.is_writable(), 'w'));
    perms.push(flag(protection.is_executable(), 'x'));
    perms.push(if shared { 's' } else { 'p' });
    perms
}

/// The page-table protection of a page of a region of `strategy` in state `committed`
/// (MAP_JIT pages report RWX). The page tables follow the model's protection on `Protect`
/// regions only.
fn table_protection(strategy: WxStrategy, committed: Option<Protection>) -> Protection {
    match (strategy, committed) {
        (WxStrategy::MapJit, _) => Protection::ExecuteReadWrite,
        (_, None) => Protection::NoAccess,
        (WxStrategy::Protect, Some(p)) => p,
        (WxStrategy::DualMap, Some(_)) => Protection::ExecuteRead,
        (WxStrategy::Rwx, Some(_)) => Protection::ExecuteReadWrite,
    }
}

// ---- the driver ----------------------------------------------------------------------------

/// What the system calls of one operation must look like on the simulator.
#[derive(Debug, Clone, Copy)]
enum Calls {
    /// None at all.
    None,
    /// Exactly one `mprotect` and nothing else.
    OneMprotect,
    /// Anything but `mprotect` (MAP_JIT regions are never mprotected).
    NoMprotect,
    Any,
}

struct Harness<'s, O: Os> {
    alloc: VirtualAlloc<O>,
    model: Model,
    /// The simulated machine under `alloc`, if it is one.
    sim: Option<&'s SimOs>,
    /// Whether `alloc` runs on the real OS (checked through `/proc/self/maps`).
    native: bool,
    step: usize,
}

impl<O: Os> Harness<'_, O> {
    fn syscalls(&self) -> Option<SyscallCounts> {
        self.sim.map(SimOs::syscalls)
    }

    fn check_calls(&self, op: &Op, before: Option<SyscallCounts>, calls: Calls) {
        let (Some(sim), Some(before)) = (self.sim, before) else {
            return;
        };
        let delta = sim.syscalls().since(&before);
        let mprotect = delta.get(SysCall::Mprotect);
        let step = self.step;
        let ok = match calls {
            Calls::None => delta.total() == 0,
            Calls::OneMprotect => mprotect == 1 && delta.total() == 1,
            Calls::NoMprotect => mprotect == 0,
            Calls::Any => true,
        };
        let made: Vec<String> = SysCall::ALL
            .iter()
            .filter(|&&call| delta.get(call) > 0)
            .map(|&call| format!("{call} x{}", delta.get(call)))
            .collect();
        assert!(ok, "step {step}: {op:?} made {made:?}, expected {calls:?}");
    }

    /// Runs one operation against both sides and compares.
    fn apply(&mut self, op: &Op) {
        let before = self.syscalls();
        let calls = self.run(op);
        // Whatever else happens, a MAP_JIT region is never mprotected.
        let calls = match (self.model.strategy, calls) {
            (WxStrategy::MapJit, Calls::Any) => Calls::NoMprotect,
            (_, calls) => calls,
        };
        self.check_calls(op, before, calls);
    }

    fn run(&mut self, op: &Op) -> Calls {
        let step = self.step;
        let page_size = self.model.page_size;
        match *op {
            Op::Reserve { pages, shave } => {
                let size = pages * page_size - shave % page_size;
                let info = self.alloc.reserve(size);
                let info = info.unwrap_or_else(|e| panic!("step {step}: reserve({size:#x}): {e}"));
                let strategy = self.model.strategy;
                assert_eq!(
                    info.size,
                    pages * page_size,
                    "step {step}: rounded to pages"
                );
                assert_eq!(info.strategy, strategy);
                assert_eq!(info.base % self.alloc.allocation_granularity(), 0);
                assert_eq!(
                    info.write_base != info.base,
                    strategy == WxStrategy::DualMap,
                    "step {step}: only dual-mapped regions have a separate write view"
                );
                assert!(
                    self.model.live().all(|r| {
                        let other = r.info;
                        info.base + info.size <= other.base || other.base + other.size <= info.base
                    }),
                    "step {step}: {info:?} overlaps a live region"
                );
                self.model.regions.push(ModelRegion {
                    info,
                    live: true,
                    pages: vec![Page::new(); pages],
                });
                self.model.counters.reserves += 1;
                Calls::Any
            }
            Op::ReserveBad { size } => {
                let expected = self.model.page_request(0, size).map(|_| ());
                let got = self.alloc.reserve(size).map(|_| ());
                assert_eq!(got, expected, "step {step}: reserve({size:#x})");
                Calls::None
            }
            Op::Commit {
                at,
                misalign,
                span,
                protection,
            } => {
                let (addr, size) = self.model.page_op(at, misalign, span);
                let expected = self.model.page_request(addr, size).and_then(|rounded| {
                    let index = self.model.region_for(addr, rounded)?;
                    self.model.check_wx(protection)?;
                    Ok((index, self.model.pages_of(index, addr, rounded)))
                });
                let got = self.alloc.commit(addr, size, protection);
                let what = format!("step {step}: commit({addr:#x}, {size:#x}, {protection:?})");
                assert_eq!(got, expected.clone().map(drop), "{what}");
                let Ok((index, pages)) = expected else {
                    return Calls::None;
                };
                for page in &mut self.model.regions[index].pages[pages] {
                    page.committed = Some(protection);
                }
                self.model.counters.commits += 1;
                Calls::Any
            }
            Op::Decommit { at, misalign, span } => {
                let (addr, size) = self.model.page_op(at, misalign, span);
                let expected = self.model.page_request(addr, size).and_then(|rounded| {
                    let index = self.model.region_for(addr, rounded)?;
                    Ok((index, self.model.pages_of(index, addr, rounded)))
                });
                let got = self.alloc.decommit(addr, size);
                let what = format!("step {step}: decommit({addr:#x}, {size:#x})");
                assert_eq!(got, expected.clone().map(drop), "{what}");
                let Ok((index, pages)) = expected else {
                    return Calls::None;
                };
                let zero = self.model.strategy != WxStrategy::MapJit;
                for page in &mut self.model.regions[index].pages[pages] {
                    *page = Page {
                        zero_elsewhere: zero,
                        ..Page::new()
                    };
                }
                self.model.counters.decommits += 1;
                Calls::Any
            }
            Op::Release {
                at,
                inside,
                misalign,
            } => {
                let at = if inside { at } else { Loc { page: 0, ..at } };
                let (anchor, _) = self.model.anchor(at);
                let addr = if inside {
                    anchor + misalign % page_size
                } else {
                    anchor
                };
                let expected = match self.model.region_of(addr) {
                    None => Err(Error::NotInRegion { addr }),
                    Some(i) if self.model.regions[i].info.base != addr => {
                        Err(Error::NotRegionBase { addr })
                    }
                    Some(i) => Ok(i),
                };
                let lines = match (&expected, self.native) {
                    (Ok(i), true) => {
                        let info = self.model.regions[*i].info;
                        let lines = region_lines(&proc_maps(), &info);
                        let covered: usize = overlapping(&lines, info.base..info.base + info.size)
                            .iter()
                            .map(|m| m.end.min(info.base + info.size) - m.start.max(info.base))
                            .sum();
                        assert_eq!(covered, info.size, "step {step}: {info:?} is mapped");
                        lines
                    }
                    _ => Vec::new(),
                };
                let got = self.alloc.release(addr);
                assert_eq!(
                    got,
                    expected.clone().map(drop),
                    "step {step}: release({addr:#x})"
                );
                let Ok(index) = expected else {
                    return Calls::None;
                };
                let region = &mut self.model.regions[index];
                region.live = false;
                if self.native {
                    assert_lines_gone(&lines, &region.info);
                }
                self.model.counters.releases += 1;
                Calls::Any
            }
            Op::Protect {
                at,
                misalign,
                span,
                new,
                expect,
            } => self.protect(at, misalign, span, new, expect),
            Op::Write {
                at,
                offset,
                len,
                byte,
                scoped,
            } => {
                let addr = self.model.byte_addr(at, offset);
                let bytes: Vec<u8> = (0..len)
                    .map(|i| byte.wrapping_add((i as u8).wrapping_mul(7)))
                    .collect();
                self.write(addr, &bytes, scoped, |alloc| alloc.write(addr, &bytes))
            }
            Op::Fill {
                at,
                offset,
                len,
                ref pattern,
            } => {
                let addr = self.model.byte_addr(at, offset);
                let bytes = fill_bytes(len, pattern);
                self.write(addr, &bytes, true, |alloc| alloc.fill(addr, len, pattern))
            }
            Op::Read {
                at,
                offset,
                len,
                scoped,
            } => {
                let addr = self.model.byte_addr(at, offset);
                let expected = self.model.byte_access(addr, len, Access::Read);
                let mut buf = vec![0xA5u8; len];
                let got = {
                    let _scope = scoped.then(WriteScope::enter);
                    self.alloc.read(addr, &mut buf)
                };
                let what = format!("step {step}: read({addr:#x}, {len})");
                assert_eq!(got, expected.clone().map(drop), "{what}");
                if let Ok(index) = expected {
                    for (i, &byte) in buf.iter().enumerate() {
                        if let Some(want) = self.model.expected_byte(index, addr + i) {
                            assert_eq!(byte, want, "{what}: byte at {:#x}", addr + i);
                        }
                    }
                }
                Calls::None
            }
            Op::Query { at, offset } => {
                let addr = self.model.byte_addr(at, offset);
                let expected = self.model.query(addr);
                let got = self.alloc.query(addr);
                assert_eq!(got, expected, "step {step}: query({addr:#x})");
                // From there to the end of a page or two on: past a region's end, or from
                // outside any, the same errors as the other range calls.
                let size = 2 * page_size - addr % page_size;
                let expected = self.model.query_range(addr, size);
                let got = self.alloc.query_range(addr, size);
                assert_eq!(
                    got, expected,
                    "step {step}: query_range({addr:#x}, {size:#x})"
                );
                Calls::None
            }
            Op::Flush { at, offset, span } => {
                let (anchor, at) = self.model.anchor(at);
                let addr = anchor
                    + match offset {
                        ByteOffset::Start(k) => k,
                        ByteOffset::End(k) => page_size - k,
                    };
                let size = self.model.span_size(span, at);
                self.flush(addr, size)
            }
            Op::EntryPoint { at, offset, scoped } => {
                let addr = self.model.byte_addr(at, offset);
                let align = self.model.arch.instruction_alignment();
                let expected = if scoped {
                    Err(Error::WrongThreadMode {
                        required: ThreadMode::Execute,
                        current: ThreadMode::Write,
                    })
                } else if !addr.is_multiple_of(align) {
                    Err(Error::Unaligned { addr, align })
                } else {
                    self.model
                        .byte_access(addr, 1, Access::Execute)
                        .map(|_| addr)
                };
                let got = {
                    let _scope = scoped.then(WriteScope::enter);
                    self.alloc.entry_point(addr)
                };
                assert_eq!(got, expected, "step {step}: entry_point({addr:#x})");
                Calls::None
            }
        }
    }

    fn protect(
        &mut self,
        at: Loc,
        misalign: usize,
        span: Span,
        new: Protection,
        expect: Expect,
    ) -> Calls {
        let step = self.step;
        let (addr, size) = self.model.page_op(at, misalign, span);
        let expected_old = match expect {
            Expect::Nothing => None,
            Expect::Other(p) => Some(p),
            Expect::Current => Some(
                self.model
                    .region_of(addr)
                    .and_then(|i| {
                        let page = (addr - self.model.regions[i].info.base) / self.model.page_size;
                        self.model.regions[i].pages[page].committed
                    })
                    .unwrap_or(Protection::ReadOnly),
            ),
        };
        let model = &self.model;
        let expected = model.page_request(addr, size).and_then(|rounded| {
            let index = model.region_for(addr, rounded)?;
            model.check_wx(new)?;
            let pages = model.pages_of(index, addr, rounded);
            model.require_committed(index, pages.clone())?;
            let protection_of = |page: usize| model.regions[index].pages[page].committed.unwrap();
            if let Some(expected) = expected_old {
                for page in pages.clone() {
                    let found = protection_of(page);
                    if found != expected {
                        return Err(Error::ProtectionMismatch {
                            addr: model.page_addr(index, page),
                            expected,
                            found,
                        });
                    }
                }
            }
            Ok((index, pages.clone(), protection_of(pages.start)))
        });
        let what = format!("step {step}: protect({addr:#x}, {size:#x}, {new:?}, {expected_old:?})");
        match expected_old {
            None => {
                let got = self.alloc.protect(addr, size, new);
                assert_eq!(got, expected.clone().map(|(_, _, old)| old), "{what}");
            }
            Some(old) => {
                let got = self.alloc.protect_expecting(addr, size, new, old);
                assert_eq!(got, expected.clone().map(drop), "{what}");
            }
        }
        let Ok((index, pages, _)) = expected else {
            return Calls::None;
        };
        for page in &mut self.model.regions[index].pages[pages] {
            page.committed = Some(new);
        }
        if self.model.strategy == WxStrategy::Protect {
            self.model.counters.protect_syscalls += 1;
            Calls::OneMprotect
        } else {
            self.model.counters.protect_skipped += 1;
            Calls::None
        }
    }

    /// A write of `bytes` at `addr` (by `write` or `fill`), in a write scope if `scoped`.
    fn write(
        &mut self,
        addr: usize,
        bytes: &[u8],
        scoped: bool,
        call: impl FnOnce(&VirtualAlloc<O>) -> Result<()>,
    ) -> Calls {
        let step = self.step;
        let expected = if scoped {
            self.model.byte_access(addr, bytes.len(), Access::Write)
        } else {
            Err(Error::WrongThreadMode {
                required: ThreadMode::Write,
                current: ThreadMode::Execute,
            })
        };
        let got = {
            let _scope = scoped.then(WriteScope::enter);
            call(&self.alloc)
        };
        let len = bytes.len();
        assert_eq!(
            got,
            expected.clone().map(drop),
            "step {step}: write({addr:#x}, {len} bytes, scoped: {scoped})"
        );
        if let Ok(index) = expected {
            self.model.write_bytes(index, addr, bytes);
        }
        Calls::None
    }

    fn flush(&mut self, addr: usize, size: usize) -> Calls {
        let step = self.step;
        let model = &self.model;
        let expected = model.region_for(addr, size).and_then(|index| {
            let pages = model.pages_of(index, addr, size);
            model.require_committed(index, pages.clone())?;
            Ok((index, pages))
        });
        let got = self.alloc.flush_instruction_cache(addr, size);
        let what = format!("step {step}: flush_instruction_cache({addr:#x}, {size:#x})");
        let unreadable = expected.as_ref().ok().and_then(|(index, pages)| {
            let region = &model.regions[*index];
            pages.clone().find(|&page| {
                let protection = region.pages[page].committed.expect("committed");
                region.info.strategy == WxStrategy::Protect && !protection.is_readable()
            })
        });
        match (unreadable, expected) {
            (Some(page), Ok((index, _))) => {
                // `Os::flush_icache` needs a readable range (`dc cvau` faults on a PROT_NONE
                // page on aarch64), but the page tables of this page say PROT_NONE. The call
                // must not reach the OS: it may refuse (AccessDenied) or skip the flush (Ok),
                // never fault.
                let page_addr = model.page_addr(index, page);
                let refused = Err(Error::AccessDenied {
                    addr: page_addr,
                    protection: Protection::NoAccess,
                    access: Access::Read,
                });
                assert!(
                    got == Ok(()) || got == refused,
                    "{what}: page {page_addr:#x} is committed NoAccess on a Protect region, so \
                     the flush must be refused or skipped without touching it; got {got:?}"
                );
                if got.is_ok() {
                    self.model.counters.icache_flushes += 1;
                }
            }
            (_, expected) => {
                assert_eq!(got, expected.map(drop), "{what}");
                if got.is_ok() {
                    self.model.counters.icache_flushes += 1;
                }
            }
        }
        Calls::None
    }

    /// Everything observable agrees with the model.
    fn check(&self) {
        let step = self.step;
        let model = &self.model;
        assert_eq!(
            self.alloc.stats(),
            model.expected_stats(),
            "step {step}: stats"
        );
        let maps = if self.native { proc_maps() } else { Vec::new() };
        for (index, region) in model.regions.iter().enumerate() {
            let info = region.info;
            let end = info.base + info.size;
            if !region.live {
                for addr in [info.base, end - 1] {
                    let owner = model.region_of(addr).map(|i| model.regions[i].info);
                    assert_eq!(self.alloc.region(addr), owner, "step {step}: {addr:#x}");
                    assert_eq!(self.alloc.is_jit_address(addr), owner.is_some());
                }
                if let Some(sim) = self.sim {
                    for page in 0..region.pages.len() {
                        let offset = page * model.page_size;
                        if info.strategy == WxStrategy::MapJit {
                            // Back in the process's one MAP_JIT region, which stays mapped
                            // (and may hand the range out again).
                            assert!(sim.is_map_jit(info.base + offset), "step {step}: region");
                        } else {
                            // The simulator never hands an address out twice.
                            assert!(!sim.is_mapped(info.base + offset), "step {step}: unmapped");
                            assert!(!sim.is_mapped(info.write_base + offset));
                        }
                    }
                }
                continue;
            }
            for addr in [info.base, end - 1] {
                assert_eq!(
                    self.alloc.region(addr),
                    Some(info),
                    "step {step}: {addr:#x}"
                );
                assert!(self.alloc.is_jit_address(addr));
            }
            // The whole region, and from inside its first page to inside its last.
            let inner = (info.base + 1, info.size - 2);
            for (addr, size) in [(info.base, info.size), inner] {
                assert_eq!(
                    self.alloc.query_range(addr, size),
                    model.query_range(addr, size),
                    "step {step}: query_range({addr:#x}, {size:#x})"
                );
            }
            for (page, state) in region.pages.iter().enumerate() {
                let addr = model.page_addr(index, page);
                let what = format!("step {step}: page {page} of {info:?}");
                assert_eq!(self.alloc.query(addr), model.query(addr), "{what}: query");
                let table = table_protection(info.strategy, state.committed);
                if let Some(sim) = self.sim {
                    assert_eq!(sim.protection_at(addr), Some(table), "{what}: page table");
                    assert_eq!(
                        sim.is_map_jit(addr),
                        info.strategy == WxStrategy::MapJit,
                        "{what}: MAP_JIT"
                    );
                    if info.strategy == WxStrategy::DualMap {
                        let write_view = info.write_base + page * model.page_size;
                        assert_eq!(
                            sim.protection_at(write_view),
                            Some(Protection::ReadWrite),
                            "{what}: writable view"
                        );
                    }
                }
                if self.native {
                    let shared = info.strategy == WxStrategy::DualMap;
                    let found = maps.iter().find(|m| m.start <= addr && addr < m.end);
                    let found = found.map(|m| m.perms.as_str());
                    let want = perms_of(table, shared);
                    assert_eq!(found, Some(want.as_str()), "{what}: /proc/self/maps");
                    if shared {
                        let write_view = info.write_base + page * model.page_size;
                        let found = maps
                            .iter()
                            .find(|m| m.start <= write_view && write_view < m.end);
                        assert_eq!(found.map(|m| m.perms.as_str()), Some("rw-s"), "{what}");
                    }
                }
            }
        }
        if let Some(sim) = self.sim {
            let resident = model
                .live()
                .flat_map(|r| &r.pages)
                .filter(|p| p.resident)
                .count();
            assert_eq!(
                sim.resident_frames(),
                resident,
                "step {step}: resident frames"
            );
        }
    }
}

/// Runs `ops` on `alloc` against the model, then tears down and checks nothing is left.
fn run_case<O: Os>(alloc: VirtualAlloc<O>, sim: Option<&SimOs>, ops: &[Op], release_all: bool) {
    let native = sim.is_none();
    let model = Model::new(alloc.page_size(), alloc.strategy(), alloc.arch());
    let mut harness = Harness {
        alloc,
        model,
        sim,
        native,
        step: 0,
    };
    harness.check();
    for (step, op) in ops.iter().enumerate() {
        harness.step = step;
        harness.apply(op);
        harness.check();
    }
    harness.step = ops.len();
    if release_all {
        let live: Vec<usize> = harness.model.live().map(|r| r.info.base).collect();
        for base in live {
            let at = Loc {
                pick: Pick::Any(harness.model.region_of(base).expect("live")),
                page: 0,
                place: Place::Page,
            };
            harness.apply(&Op::Release {
                at,
                inside: false,
                misalign: 0,
            });
            harness.check();
        }
        assert_eq!(harness.alloc.stats().regions, 0);
        if let Some(sim) = sim {
            assert_eq!(sim.mapped_pages(), 0, "released everything: no page mapped");
            assert_eq!(sim.shared_objects(), 0, "released everything: no memfd");
            assert_eq!(sim.resident_frames(), 0, "released everything: no frame");
        }
    }
    let maps = if native { proc_maps() } else { Vec::new() };
    let left: Vec<(RegionInfo, Vec<MapLine>)> = harness
        .model
        .live()
        .map(|r| (r.info, region_lines(&maps, &r.info)))
        .collect();
    drop(harness);
    if let Some(sim) = sim {
        assert_eq!(sim.mapped_pages(), 0, "dropped: no page mapped");
        assert_eq!(sim.shared_objects(), 0, "dropped: no memfd");
        assert_eq!(sim.resident_frames(), 0, "dropped: no frame");
    }
    // Simulated regions have no lines in /proc/self/maps (which miri cannot read anyway).
    if native {
        for (info, lines) in &left {
            assert_lines_gone(lines, info);
        }
    }
}

// ---- backends ------------------------------------------------------------------------------

/// One to three regions to start from, then up to `max` random operations.
fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    let setups = prop::collection::vec(setup(), 1..=3);
    (setups, prop::collection::vec(op(), 0..max)).prop_map(|(setups, rest)| {
        let mut ops: Vec<Op> = setups.into_iter().flatten().collect();
        ops.extend(rest);
        ops
    })
}

/// Runs a case on a simulated machine, kept shared so it can be inspected after the drop.
fn run_sim(rules: SimRules, strategy: Option<WxStrategy>, ops: &[Op], release_all: bool) {
    let sim = Arc::new(SimOs::new(rules));
    let os = Arc::clone(&sim);
    let alloc = match strategy {
        Some(strategy) => VirtualAlloc::with_strategy(os, strategy).expect("available"),
        None => VirtualAlloc::new(os),
    };
    run_case(alloc, Some(&sim), ops, release_all);
}

/// Cases per simulated backend (a handful under miri, which is slow).
const SIM_OPS: usize = 40;

proptest! {
    #![proptest_config(sim_proptest_config(64, 2))]

    #[test]
    fn sim_apple_map_jit(ops in ops(SIM_OPS), release_all in any::<bool>()) {
        let rules = SimRules::apple();
        assert_eq!(
            VirtualAlloc::<SimOs>::default_strategy(&SimOs::new(rules)),
            WxStrategy::MapJit
        );
        run_sim(rules, None, &ops, release_all);
    }

    #[test]
    fn sim_linux_dual_map(ops in ops(SIM_OPS), release_all in any::<bool>()) {
        run_sim(SimRules::linux(), Some(WxStrategy::DualMap), &ops, release_all);
    }

    #[test]
    fn sim_linux_protect(ops in ops(SIM_OPS), release_all in any::<bool>()) {
        run_sim(SimRules::linux(), Some(WxStrategy::Protect), &ops, release_all);
    }

    #[test]
    fn sim_linux_rwx(ops in ops(SIM_OPS), release_all in any::<bool>()) {
        run_sim(SimRules::linux(), Some(WxStrategy::Rwx), &ops, release_all);
    }

    #[test]
    fn sim_linux_aarch64_dual_map(ops in ops(SIM_OPS), release_all in any::<bool>()) {
        run_sim(SimRules::linux_aarch64(), Some(WxStrategy::DualMap), &ops, release_all);
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
mod native {
    use std::sync::Mutex;

    use super::*;
    use codeheap_test_support::proptest_config;
    use codeheap_virtual_alloc::NativeOs;

    /// The real-OS cases run one at a time: each checks at its end that no codeheap memfd
    /// is left open in the process.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn run_native(strategy: WxStrategy, ops: &[Op], release_all: bool) {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let alloc = VirtualAlloc::with_strategy(NativeOs::new(), strategy).expect("available");
        run_case(alloc, None, ops, release_all);
        assert_eq!(codeheap_memfds(), 0, "every memfd is closed");
    }

    const NATIVE_OPS: usize = 30;

    proptest! {
        #![proptest_config(proptest_config(24, 24))]

        #[test]
        fn native_dual_map(ops in ops(NATIVE_OPS), release_all in any::<bool>()) {
            run_native(WxStrategy::DualMap, &ops, release_all);
        }

        #[test]
        fn native_protect(ops in ops(NATIVE_OPS), release_all in any::<bool>()) {
            run_native(WxStrategy::Protect, &ops, release_all);
        }

        #[test]
        fn native_rwx(ops in ops(NATIVE_OPS), release_all in any::<bool>()) {
            run_native(WxStrategy::Rwx, &ops, release_all);
        }
    }
}

// ---- pinned cases --------------------------------------------------------------------------

/// Regression: `flush_instruction_cache` once checked only that the pages were committed.
/// A committed `NoAccess` page is PROT_NONE on a `Protect` region, and cache maintenance on
/// it faults (`dc cvau` on aarch64): the flush must be refused before it reaches the OS.
#[test]
fn flushing_a_no_access_protect_page_does_not_reach_the_os() {
    let alloc = VirtualAlloc::with_strategy(SimOs::linux(), WxStrategy::Protect).unwrap();
    let region = alloc.reserve(4096).unwrap();
    alloc
        .commit(region.base, 4096, Protection::NoAccess)
        .unwrap();
    let got = alloc.flush_instruction_cache(region.base, 1);
    let refused = Err(Error::AccessDenied {
        addr: region.base,
        protection: Protection::NoAccess,
        access: Access::Read,
    });
    assert_eq!(got, refused, "flush of a PROT_NONE page reached the OS");
    assert_eq!(alloc.os().icache_flushes(), 0);
}

/// Reserving a size that overflows once the granularity slack is added fails with
/// `SizeOverflow` on every backend, before anything (a memfd, say) is created.
#[test]
fn reserving_a_near_max_size_is_an_error_on_every_backend() {
    fn check<O: Os>(label: &str, alloc: VirtualAlloc<O>) {
        let page = alloc.page_size();
        let size = usize::MAX - (page - 1);
        assert_eq!(
            alloc.reserve(size),
            Err(Error::SizeOverflow { size }),
            "{label}"
        );
        assert_eq!(alloc.stats().regions, 0, "{label}");
    }
    let linux = |strategy| VirtualAlloc::with_strategy(SimOs::linux(), strategy).unwrap();
    check("apple", VirtualAlloc::new(SimOs::apple()));
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        check(strategy.name(), linux(strategy));
        #[cfg(all(target_os = "linux", not(miri)))]
        check(
            strategy.name(),
            VirtualAlloc::with_strategy(codeheap_virtual_alloc::NativeOs::new(), strategy).unwrap(),
        );
    }
}

/// A reservation larger than the simulator's page table is refused, not a host crash.
#[test]
fn the_simulator_refuses_reservations_beyond_its_page_table() {
    let huge = 1usize << 44;
    for alloc in [
        // A MAP_JIT region that large, mapped at the first reservation, is what is refused.
        VirtualAlloc::new(SimOs::new(SimRules::apple().with_jit_region_size(huge))),
        VirtualAlloc::with_strategy(SimOs::linux(), WxStrategy::DualMap).unwrap(),
    ] {
        assert!(
            matches!(alloc.reserve(huge), Err(Error::OutOfMemory { .. })),
            "{}",
            alloc.strategy()
        );
        assert_eq!(alloc.os().mapped_pages(), 0);
        assert_eq!(alloc.os().shared_objects(), 0);
    }
}

/// `writable_address` is where a raw write to a code address must go: the address itself,
/// or, under `DualMap`, its place in the writable view, where bytes written show at the
/// address. Outside every region there is none.
#[test]
fn the_writable_address_is_where_writes_show_at_the_code_address() {
    let linux = |strategy| VirtualAlloc::with_strategy(SimOs::linux(), strategy).unwrap();
    for alloc in [
        VirtualAlloc::new(SimOs::apple()),
        linux(WxStrategy::DualMap),
        linux(WxStrategy::Protect),
        linux(WxStrategy::Rwx),
    ] {
        let page = alloc.page_size();
        let region = alloc
            .reserve_and_commit(2 * page, Protection::ReadWrite)
            .unwrap();
        let addr = region.base + page + 24;
        let write = alloc.writable_address(addr).unwrap();
        let dual = alloc.strategy() == WxStrategy::DualMap;
        assert_eq!(write != addr, dual, "{}", alloc.strategy());
        assert_eq!(write - addr, region.write_base.wrapping_sub(region.base));
        // In write mode, as MAP_JIT pages need.
        let written = codeheap_virtual_alloc::with_write_mode(|| {
            // SAFETY: the simulator's memory is written, no process memory.
            unsafe { alloc.os().write(write, &[1, 2, 3]) }
        });
        written.unwrap();
        let mut read = [0; 3];
        alloc.read(addr, &mut read).unwrap();
        assert_eq!(read, [1, 2, 3], "{}", alloc.strategy());
        assert!(alloc.writable_address(region.base + 2 * page).is_err());
    }
}
