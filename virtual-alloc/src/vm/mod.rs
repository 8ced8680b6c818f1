//! [`VirtualAlloc`]: the porting surface, shaped like the Windows calls an engine ported
//! from Windows already makes, over any [`Os`].

mod code_range;
mod region;
mod reserve;
mod stats;

pub use code_range::CodeRangeConfig;
pub use region::{PageState, RegionInfo};
pub use stats::VirtualAllocStats;

use code_range::CodeRange;
use region::{Region, RegionState};
use stats::Counters;

use crate::ALLOCATION_GRANULARITY;
use crate::arch::Arch;
use crate::error::{Access, Error, Result};
use crate::os::{Os, SharedMemory};
use crate::protection::Protection;
use crate::registry::RegionRegistry;
use crate::strategy::WxStrategy;
use crate::sync::{Arc, lock};
use crate::word::Word;
use crate::write_mode::{ThreadMode, require_mode};

use core::sync::atomic::Ordering::Relaxed;

/// What `VirtualQuery` tells about an address: the reservation that holds it and the run
/// of pages from its page on that share one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Base of the reservation (`AllocationBase`).
    pub allocation_base: usize,
    /// Size of the reservation.
    pub allocation_size: usize,
    /// The page holding the address (`BaseAddress`).
    pub base: usize,
    /// Bytes from `base` whose pages share `state` (`RegionSize`).
    pub size: usize,
    /// Reserved, or committed with a protection (`State`, `Protect`).
    pub state: PageState,
    /// The strategy managing the reservation.
    pub strategy: WxStrategy,
}

/// Reserve, commit, protect and release code memory through one [`WxStrategy`], as
/// `VirtualAlloc`/`VirtualProtect`/`VirtualFree`/`VirtualQuery`/`FlushInstructionCache`
/// would on Windows.
///
/// Every region is 64 KiB-aligned and registered, so any address can be mapped back to its
/// region and strategy. Protect calls on `MapJit`, `DualMap` and `Rwx` regions make no
/// system call (the protection is kept as bookkeeping, so expected-old checks still work)
/// and are counted in [`stats`](VirtualAlloc::stats). Writes need the calling thread in
/// write mode ([`WriteScope`](crate::WriteScope)) and entry points need it in execute mode,
/// on every platform.
///
/// `Send + Sync`; each call is atomic with respect to the region it touches.
#[derive(Debug)]
pub struct VirtualAlloc<O: Os> {
    os: O,
    strategy: WxStrategy,
    granularity: usize,
    regions: RegionRegistry<Arc<Region>>,
    /// The span every region of `strategy` is carved from, if one was asked for.
    code_range: Option<CodeRange>,
    counters: Counters,
}

/// Whether `os` can dual-map: one page of shared memory mapped twice, then undone.
fn dual_map_works<O: Os>(os: &O) -> bool {
    let page = os.page_size();
    let Ok(shared) = os.create_shared(page) else {
        return false;
    };
    let mut views = Vec::new();
    for protection in [Protection::ExecuteRead, Protection::ReadWrite] {
        // SAFETY: no fixed address; the views are unmapped below and never used.
        match unsafe { os.map_shared(&shared, 0, page, protection, None) } {
            Ok(view) => views.push(view),
            Err(_) => break,
        }
    }
    let works = views.len() == 2;
    for view in views {
        // SAFETY: the probe's own view, unused.
        let _ = unsafe { os.unmap(view, page) };
    }
    let _ = os.close_shared(shared);
    works
}

impl<O: Os> VirtualAlloc<O> {
    /// An allocator with the platform's default strategy: `MapJit` where the OS has it
    /// (macOS), else `DualMap` if shared memory can be mapped twice (Linux), else `Protect`.
    pub fn new(os: O) -> VirtualAlloc<O> {
        let strategy = Self::default_strategy(&os);
        Self::build(os, strategy)
    }

    /// An allocator whose regions use `strategy`; `StrategyUnavailable` if the OS cannot
    /// provide it.
    pub fn with_strategy(os: O, strategy: WxStrategy) -> Result<VirtualAlloc<O>> {
        let reason = match strategy {
            WxStrategy::MapJit if !os.has_map_jit() => Some("this OS has no MAP_JIT"),
            WxStrategy::DualMap if !dual_map_works(&os) => {
                Some("shared memory cannot be mapped twice here")
            }
            _ => None,
        };
        match reason {
            Some(reason) => Err(Error::StrategyUnavailable { strategy, reason }),
            None => Ok(Self::build(os, strategy)),
        }
    }

    /// The strategy [`new`](VirtualAlloc::new) picks for `os`.
    pub fn default_strategy(os: &O) -> WxStrategy {
        if os.has_map_jit() {
            WxStrategy::MapJit
        } else if dual_map_works(os) {
            WxStrategy::DualMap
        } else {
            WxStrategy::Protect
        }
    }

    fn build(os: O, strategy: WxStrategy) -> VirtualAlloc<O> {
        let granularity = ALLOCATION_GRANULARITY.max(os.page_size());
        VirtualAlloc {
            os,
            strategy,
            granularity,
            regions: RegionRegistry::new(),
            code_range: None,
            counters: Counters::default(),
        }
    }

    /// An allocator (with `strategy`, or the platform's default if `None`) that reserves
    /// one span of `range.size` bytes (rounded up to the 64 KiB granularity) now and carves
    /// every region of its strategy from it, so all of them lie within the span: a code
    /// range, as V8, SpiderMonkey and JavaScriptCore keep one, for code that reaches other
    /// code with direct calls ([`Arch::call_reach`]). With `range.near` the span is placed
    /// within call reach of that address (the OS is asked for a few places near it), or
    /// refused with `CodeRangeOutOfReach`; on MAP_JIT it can only lie where the process's
    /// MAP_JIT region is. A reservation that no free part of the span fits is refused with
    /// `CodeRangeFull`; a released region's span is reserved again for the next. Regions
    /// reserved with another strategy ([`reserve_with`](Self::reserve_with)) are mapped
    /// outside it. A span there is no room for (`OutOfMemory`: the OS ran out of address
    /// space; `MapJitRegionFull`; `CodeRangeOutOfReach`) is tried again at half the size,
    /// down to `range.min_size` ([`or_smaller_down_to`](CodeRangeConfig::or_smaller_down_to));
    /// [`code_range`](Self::code_range) says what was reserved.
    pub fn with_code_range(
        os: O,
        strategy: Option<WxStrategy>,
        range: CodeRangeConfig,
    ) -> Result<VirtualAlloc<O>> {
        let mut alloc = match strategy {
            Some(strategy) => Self::with_strategy(os, strategy)?,
            None => Self::new(os),
        };
        let near = range.near.map(|near| (near, alloc.arch().call_reach()));
        let (os, strategy, granularity) = (&alloc.os, alloc.strategy, alloc.granularity);
        // `sizes` yields at least one size, so this error is always replaced.
        let mut reserved = Err(Error::ZeroSize);
        for size in range.sizes(granularity)? {
            reserved = CodeRange::reserve_near(os, strategy, size, granularity, near);
            // Out of address space, of the MAP_JIT region's or of room near `near`: a
            // smaller span may fit.
            let no_room = matches!(
                reserved,
                Err(Error::OutOfMemory { .. }
                    | Error::MapJitRegionFull { .. }
                    | Error::CodeRangeOutOfReach { .. })
            );
            if !no_room {
                break;
            }
        }
        alloc.code_range = Some(reserved?);
        Ok(alloc)
    }

    /// The span every region of the allocator's strategy lies in, if it has a
    /// [code range](Self::with_code_range).
    pub fn code_range(&self) -> Option<core::ops::Range<usize>> {
        (self.code_range.as_ref()).map(|range| range.span.base..range.span.end())
    }

    /// Bytes of the code range no region holds (`None` without one).
    pub fn code_range_free_bytes(&self) -> Option<usize> {
        self.code_range.as_ref().map(CodeRange::free_bytes)
    }

    /// The OS underneath.
    pub fn os(&self) -> &O {
        &self.os
    }

    /// The strategy of regions made by [`reserve`](VirtualAlloc::reserve).
    pub fn strategy(&self) -> WxStrategy {
        self.strategy
    }

    /// The OS page size: the unit of commit, decommit and protect.
    pub fn page_size(&self) -> usize {
        self.os.page_size()
    }

    /// The alignment of every region's base: 64 KiB, or the page size if larger.
    pub fn allocation_granularity(&self) -> usize {
        self.granularity
    }

    /// The instruction set code runs as.
    pub fn arch(&self) -> Arch {
        self.os.arch()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> VirtualAllocStats {
        self.counters.snapshot(self.regions.len())
    }

    // ---- argument checks --------------------------------------------------------------------

    /// `size` rounded up to whole pages; `ZeroSize` or `SizeOverflow` if it cannot be.
    fn page_rounded(&self, size: usize) -> Result<usize> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        size.checked_next_multiple_of(self.page_size())
            .ok_or(Error::SizeOverflow { size })
    }

    /// Checks a page-granular request: `addr` page-aligned, `size` rounded to pages.
    fn page_request(&self, addr: usize, size: usize) -> Result<usize> {
        let size = self.page_rounded(size)?;
        if !addr.is_multiple_of(self.page_size()) {
            return Err(Error::Unaligned {
                addr,
                align: self.page_size(),
            });
        }
        Ok(size)
    }

    /// Runs `f` on the one live region holding `addr..addr + size`, with its lock held.
    fn with_region<R>(
        &self,
        addr: usize,
        size: usize,
        f: impl FnOnce(&Region, &mut RegionState) -> Result<R>,
    ) -> Result<R> {
        let (_, region) = self.regions.lookup_range(addr, size)?;
        let mut state = lock(&region.state);
        if state.released {
            return Err(Error::NotInRegion { addr });
        }
        f(&region, &mut state)
    }

    // ---- reserve / commit / decommit / release ------------------------------------------

    /// Reserves `size` bytes (rounded up to pages) of address space with the allocator's
    /// strategy, at a 64 KiB-aligned base (`VirtualAlloc(MEM_RESERVE)`).
    pub fn reserve(&self, size: usize) -> Result<RegionInfo> {
        self.reserve_with(size, self.strategy)
    }

    /// Reserves with another strategy than the allocator's own.
    pub fn reserve_with(&self, size: usize, strategy: WxStrategy) -> Result<RegionInfo> {
        let info = self.make_region(size, strategy)?;
        Counters::bump(&self.counters.reserves);
        Ok(info)
    }

    /// Reserves and commits in one call (`MEM_RESERVE | MEM_COMMIT`); nothing is left
    /// reserved (or counted) if the commit fails.
    pub fn reserve_and_commit(&self, size: usize, protection: Protection) -> Result<RegionInfo> {
        let info = self.make_region(size, self.strategy)?;
        if let Err(err) = self.commit(info.base, info.size, protection) {
            let _ = self.unmake_region(info.base);
            return Err(err);
        }
        Counters::bump(&self.counters.reserves);
        Ok(info)
    }

    /// Maps and registers a region: a reserve without its counter.
    fn make_region(&self, size: usize, strategy: WxStrategy) -> Result<RegionInfo> {
        let size = self.page_rounded(size)?;
        let (info, shared) = match &self.code_range {
            Some(range) if strategy == self.strategy => {
                (range.carve(&self.os, size, self.granularity)?, None)
            }
            _ => reserve::reserve(&self.os, strategy, size, self.granularity, None)?,
        };
        // The region is complete, its memfd included, before it is registered: from then on
        // any thread can find it and decommit or release it.
        let region = Arc::new(Region::new(info, self.page_size(), shared));
        self.counters.reserved_bytes.fetch_add(size, Relaxed);
        if let Err(err) = self
            .regions
            .register(info.base, info.size, Arc::clone(&region))
        {
            self.counters.reserved_bytes.fetch_sub(size, Relaxed);
            // SAFETY: the mappings were made (or the span carved) above and, unregistered,
            // nobody else knows them; no page of them is committed.
            let _ = unsafe { self.unmap_region(&region.info, &mut lock(&region.state).shared) };
            return Err(err);
        }
        Ok(info)
    }

    /// Commits the pages of `addr..addr + size` (`addr` page-aligned, `size` rounded up to
    /// pages) with `protection` (`MEM_COMMIT`). Already committed pages keep their contents
    /// and take the new protection. `ExecuteReadWrite` is refused outside `Rwx` regions.
    pub fn commit(&self, addr: usize, size: usize, protection: Protection) -> Result<()> {
        let size = self.page_request(addr, size)?;
        self.with_region(addr, size, |region, state| {
            let info = region.info;
            check_wx(info.strategy, protection)?;
            let pages = region.page_indices(addr, size);
            let newly = pages.len() - state.committed_count(pages.clone());
            // SAFETY: the pages belong to this live region, whose lock is held; committing
            // them is what the caller asked for.
            unsafe { self.commit_pages(info.strategy, addr, size, protection) }?;
            state.pages[pages].fill(PageState::Committed(protection));
            self.counters
                .committed_bytes
                .fetch_add(newly * region.page_size, Relaxed);
            Counters::bump(&self.counters.commits);
            Ok(())
        })
    }

    /// Decommits the pages of `addr..addr + size` (`MEM_DECOMMIT`): their memory goes back
    /// to the OS and they fault if touched or run. Recommitted pages read as zero, except on
    /// `MapJit`, where the kernel may hand back the old contents.
    pub fn decommit(&self, addr: usize, size: usize) -> Result<()> {
        let size = self.page_request(addr, size)?;
        self.with_region(addr, size, |region, state| {
            let info = region.info;
            let pages = region.page_indices(addr, size);
            let dropped = state.committed_count(pages.clone());
            match info.strategy {
                WxStrategy::DualMap => self.decommit_dual(region, state, addr, size)?,
                // SAFETY: the pages belong to this live region, whose lock is held, and the
                // caller gives up their contents.
                strategy => unsafe { self.decommit_pages(strategy, addr, size) }?,
            }
            state.pages[pages].fill(PageState::Reserved);
            self.counters
                .committed_bytes
                .fetch_sub(dropped * region.page_size, Relaxed);
            Counters::bump(&self.counters.decommits);
            Ok(())
        })
    }

    /// The system side of a commit.
    ///
    /// # Safety
    /// The pages belong to a live region of `strategy` whose lock the caller holds.
    unsafe fn commit_pages(
        &self,
        strategy: WxStrategy,
        addr: usize,
        size: usize,
        protection: Protection,
    ) -> Result<()> {
        let os = &self.os;
        // SAFETY: every arm is forwarded to the caller. The page tables follow the protection
        // only on Protect regions; Rwx pages are always RWX, a dual-mapped executable view is
        // always RX once committed, and MAP_JIT pages are never mprotected, only advised.
        unsafe {
            match strategy {
                WxStrategy::Protect => os.protect(addr, size, protection),
                WxStrategy::Rwx => os.protect(addr, size, Protection::ExecuteReadWrite),
                WxStrategy::DualMap => os.protect(addr, size, Protection::ExecuteRead),
                WxStrategy::MapJit => os.recommit_jit(addr, size),
            }
        }
    }

    /// The system side of a decommit, for regions without a second view.
    ///
    /// # Safety
    /// The pages belong to a live region of `strategy` whose lock the caller holds, and
    /// nothing uses their contents any more.
    unsafe fn decommit_pages(&self, strategy: WxStrategy, addr: usize, size: usize) -> Result<()> {
        // SAFETY: both arms are forwarded to the caller.
        unsafe {
            match strategy {
                WxStrategy::MapJit => self.os.decommit_jit(addr, size),
                _ => self.os.decommit_private(addr, size),
            }
        }
    }

    /// Dual-mapped pages: the executable view goes inaccessible first, so nothing runs the
    /// zeros, then the memfd drops the memory. If that fails the view is put back.
    fn decommit_dual(
        &self,
        region: &Region,
        state: &RegionState,
        addr: usize,
        size: usize,
    ) -> Result<()> {
        let (shared, offset) = match &state.shared {
            Some(own) => (own, addr - region.info.base),
            None => (self.code_range.as_ref())
                .and_then(|range| range.shared_at(addr))
                .expect("a dual-mapped region owns a memfd or is carved from the range's"),
        };
        // SAFETY: the pages belong to this live region; the caller gives up their contents.
        unsafe { self.os.protect(addr, size, Protection::NoAccess) }?;
        if let Err(err) = self.os.discard_shared(shared, offset, size) {
            for i in region.page_indices(addr, size) {
                if state.pages[i] != PageState::Reserved {
                    let page = region.page_address(i);
                    // SAFETY: restoring the view of a committed page of this region.
                    let _ = unsafe {
                        self.os
                            .protect(page, region.page_size, Protection::ExecuteRead)
                    };
                }
            }
            return Err(err);
        }
        Ok(())
    }

    /// Releases the region whose base is `base` (`MEM_RELEASE`): all its pages, both views,
    /// its descriptor and its registration. `NotRegionBase` for an address inside a region.
    pub fn release(&self, base: usize) -> Result<()> {
        self.unmake_region(base)?;
        Counters::bump(&self.counters.releases);
        Ok(())
    }

    /// Unmaps and unregisters a region: a release without its counter.
    fn unmake_region(&self, base: usize) -> Result<()> {
        let (span, region) = self
            .regions
            .lookup(base)
            .ok_or(Error::NotInRegion { addr: base })?;
        if span.base != base {
            return Err(Error::NotRegionBase { addr: base });
        }
        let mut state = lock(&region.state);
        if state.released {
            return Err(Error::NotInRegion { addr: base });
        }
        let committed = state.committed_count(0..state.pages.len());
        if self.is_carved(&region.info) && region.info.strategy == WxStrategy::DualMap {
            // The span stays mapped, so its memory goes back as a decommit gives it, with
            // the executable view restored if the memfd refuses.
            self.decommit_dual(&region, &state, base, region.info.size)?;
        }
        // SAFETY: the region is live and its lock is held: no checked access is in flight,
        // and none can start once it is marked released.
        unsafe { self.unmap_region(&region.info, &mut state.shared) }?;
        state.released = true;
        drop(state);
        self.regions.unregister(base);
        self.counters
            .committed_bytes
            .fetch_sub(committed * region.page_size, Relaxed);
        self.counters
            .reserved_bytes
            .fetch_sub(region.info.size, Relaxed);
        Ok(())
    }

    /// Whether `info` was carved from the code range.
    fn is_carved(&self, info: &RegionInfo) -> bool {
        (self.code_range.as_ref()).is_some_and(|range| range.holds(info.base))
    }

    /// Gives a region's address space back: unmaps it, or returns a carved region's span to
    /// the code range after giving back its memory (which a dual-mapped region's caller
    /// has already done).
    ///
    /// # Safety
    /// Nothing uses the region any more.
    unsafe fn unmap_region(
        &self,
        info: &RegionInfo,
        shared: &mut Option<SharedMemory>,
    ) -> Result<()> {
        let Some(range) = self
            .code_range
            .as_ref()
            .filter(|range| range.holds(info.base))
        else {
            // SAFETY: forwarded to the caller.
            return unsafe { reserve::release(&self.os, info, shared) };
        };
        if info.strategy != WxStrategy::DualMap {
            // SAFETY: forwarded to the caller, who gives up the pages' contents.
            unsafe { self.decommit_pages(info.strategy, info.base, info.size) }?;
        }
        // SAFETY: carved from the range, its memory given back above or by the caller, and
        // (forwarded) unused.
        unsafe { range.give_back(&self.os, info) };
        Ok(())
    }

    // ---- protect / query --------------------------------------------------------------

    /// Changes the protection of committed pages and returns the old protection of the
    /// first (`VirtualProtect`). Only `Protect` regions make a system call.
    pub fn protect(&self, addr: usize, size: usize, protection: Protection) -> Result<Protection> {
        self.protect_checked(addr, size, protection, None)
    }

    /// Like [`protect`](VirtualAlloc::protect), but every page must currently have
    /// `expected_old`, else `ProtectionMismatch` and nothing changes (ChakraCore's
    /// `ProtectPages` check, which there is a fail-fast).
    pub fn protect_expecting(
        &self,
        addr: usize,
        size: usize,
        protection: Protection,
        expected_old: Protection,
    ) -> Result<()> {
        self.protect_checked(addr, size, protection, Some(expected_old))
            .map(drop)
    }

    fn protect_checked(
        &self,
        addr: usize,
        size: usize,
        protection: Protection,
        expected_old: Option<Protection>,
    ) -> Result<Protection> {
        let size = self.page_request(addr, size)?;
        self.with_region(addr, size, |region, state| {
            let strategy = region.info.strategy;
            check_wx(strategy, protection)?;
            let pages = region.page_indices(addr, size);
            state.require_committed(region, pages.clone())?;
            let protection_of = |i: usize| match state.pages[i] {
                PageState::Committed(p) => p,
                PageState::Reserved => unreachable!("checked committed"),
            };
            if let Some(expected) = expected_old
                && let Some(i) = pages.clone().find(|&i| protection_of(i) != expected)
            {
                return Err(Error::ProtectionMismatch {
                    addr: region.page_address(i),
                    expected,
                    found: protection_of(i),
                });
            }
            let old = protection_of(pages.start);
            if strategy.protect_makes_syscall() {
                // SAFETY: committed pages of this live region; checked accesses hold the
                // region lock, so none is in flight on them.
                unsafe { self.os.protect(addr, size, protection) }?;
                Counters::bump(&self.counters.protect_syscalls);
            } else {
                Counters::bump(&self.counters.protect_skipped);
            }
            state.pages[pages].fill(PageState::Committed(protection));
            Ok(old)
        })
    }

    /// What is at `addr` (`VirtualQuery`): its reservation and the run of same-state pages
    /// from its page on. `NotInRegion` outside every region.
    pub fn query(&self, addr: usize) -> Result<MemoryInfo> {
        self.with_region(addr, 1, |region, state| {
            let first = region.page_indices(addr, 1).start;
            let page_state = state.pages[first];
            let run = state.pages[first..]
                .iter()
                .take_while(|s| **s == page_state)
                .count();
            Ok(MemoryInfo {
                allocation_base: region.info.base,
                allocation_size: region.info.size,
                base: region.page_address(first),
                size: run * region.page_size,
                state: page_state,
                strategy: region.info.strategy,
            })
        })
    }

    /// What [`query`](Self::query) says of each run of same-state pages in `addr..addr +
    /// size` (which must lie in one region), in address order, the last run cut at the
    /// range's end: one walk of the region's pages, where a query per page would measure
    /// each page's run to the region's end. `ZeroSize`, `NotInRegion` and
    /// `RangeOutsideRegion` as for the other range calls.
    pub fn query_range(&self, addr: usize, size: usize) -> Result<Vec<MemoryInfo>> {
        self.with_region(addr, size, |region, state| {
            let pages = region.page_indices(addr, size);
            let mut first = pages.start;
            let runs = (state.pages[pages])
                .chunk_by(|a, b| a == b)
                .map(|run| {
                    let info = MemoryInfo {
                        allocation_base: region.info.base,
                        allocation_size: region.info.size,
                        base: region.page_address(first),
                        size: run.len() * region.page_size,
                        state: run[0],
                        strategy: region.info.strategy,
                    };
                    first += run.len();
                    info
                })
                .collect();
            Ok(runs)
        })
    }

    /// The region holding `addr`, if it is one of this allocator's.
    pub fn region(&self, addr: usize) -> Option<RegionInfo> {
        self.regions.lookup(addr).map(|(_, region)| region.info)
    }

    /// Whether `addr` lies in one of this allocator's regions (the seeds' `IsMapJitRegion`).
    pub fn is_jit_address(&self, addr: usize) -> bool {
        self.regions.contains(addr)
    }

    // ---- code: write, flush, run ------------------------------------------------------

    /// Copies `bytes` to `addr` through the region's writable view. The calling thread must
    /// be in write mode, the pages committed and, on `Protect` regions, writable.
    pub fn write(&self, addr: usize, bytes: &[u8]) -> Result<()> {
        require_mode(ThreadMode::Write)?;
        self.with_region(addr, bytes.len(), |region, state| {
            state.require_access(
                region,
                region.page_indices(addr, bytes.len()),
                Access::Write,
            )?;
            // SAFETY: checked committed and writable for this thread's mode and strategy,
            // and the region lock keeps it so during the copy.
            unsafe { self.os.write(region.info.write_address(addr), bytes) }
        })
    }

    /// Fills `size` bytes at `addr` with `pattern` repeated (a last partial repetition is
    /// zeroed), under the same rules as [`write`](VirtualAlloc::write).
    pub fn fill(&self, addr: usize, size: usize, pattern: &[u8]) -> Result<()> {
        require_mode(ThreadMode::Write)?;
        self.with_region(addr, size, |region, state| {
            state.require_access(region, region.page_indices(addr, size), Access::Write)?;
            // SAFETY: as in `write`.
            unsafe { self.os.fill(region.info.write_address(addr), size, pattern) }
        })
    }

    /// Writes `word` to `addr` with one single-copy-atomic store (see [`Os::store`]), for a
    /// patch to code other threads may be running; `Unaligned` unless `addr` is a multiple
    /// of its width. Under the same rules as [`write`](VirtualAlloc::write).
    pub fn store(&self, addr: usize, word: Word) -> Result<()> {
        require_mode(ThreadMode::Write)?;
        self.with_region(addr, word.len(), |region, state| {
            state.require_access(region, region.page_indices(addr, word.len()), Access::Write)?;
            // SAFETY: as in `write`; the writable view keeps the address's alignment (both
            // views start on a granularity boundary).
            unsafe { self.os.store(region.info.write_address(addr), word) }
        })
    }

    /// Copies bytes at `addr` into `buf`. The pages must be committed and, on `Protect`
    /// regions, readable.
    pub fn read(&self, addr: usize, buf: &mut [u8]) -> Result<()> {
        self.with_region(addr, buf.len(), |region, state| {
            state.require_access(region, region.page_indices(addr, buf.len()), Access::Read)?;
            // SAFETY: checked committed and readable; the region lock keeps it so.
            unsafe { self.os.read(region.info.write_address(addr), buf) }
        })
    }

    /// The address `addr` is written through: itself, or its place in a dual-mapped
    /// region's writable view. For engines that write through raw pointers.
    pub fn writable_address(&self, addr: usize) -> Result<usize> {
        self.with_region(addr, 1, |region, _| Ok(region.info.write_address(addr)))
    }

    /// Makes code written to `addr..addr + size` visible to instruction fetch
    /// (`FlushInstructionCache`). The pages must be committed and readable (the cache
    /// maintenance instructions fault on an inaccessible page).
    pub fn flush_instruction_cache(&self, addr: usize, size: usize) -> Result<()> {
        self.with_region(addr, size, |region, state| {
            state.require_access(region, region.page_indices(addr, size), Access::Read)?;
            // SAFETY: committed, readable pages of a live region.
            unsafe { self.os.flush_icache(addr, size) }?;
            Counters::bump(&self.counters.icache_flushes);
            Ok(())
        })
    }

    /// Makes every thread of the process discard instructions it fetched before the last
    /// icache flush ([`Os::sync_cores`]: `membarrier` on Linux, nothing on macOS). For an
    /// engine on aarch64 whose threads run code other threads wrote: once after a batch of
    /// functions is written and flushed, before their addresses reach the threads that run
    /// them (wasmtime does it once per module it publishes). An interrupt to every core
    /// running one of the process's threads: measured on a 2-vCPU guest, 0.45 µs with no
    /// other thread running, 12 µs beside one running on the other vCPU.
    pub fn sync_cores(&self) -> Result<()> {
        self.os.sync_cores()?;
        Counters::bump(&self.counters.core_syncs);
        Ok(())
    }

    /// Checks that the calling thread may run code at `addr` and returns it: the thread is
    /// in execute mode (a background compiler in permanent write mode is refused), the
    /// address is instruction-aligned, its page committed and, on `Protect` regions,
    /// executable.
    pub fn entry_point(&self, addr: usize) -> Result<usize> {
        require_mode(ThreadMode::Execute)?;
        let align = self.arch().instruction_alignment();
        if !addr.is_multiple_of(align) {
            return Err(Error::Unaligned { addr, align });
        }
        self.with_region(addr, 1, |region, state| {
            state.require_access(region, region.page_indices(addr, 1), Access::Execute)?;
            Ok(addr)
        })
    }

    /// Calls the `extern "C" fn() -> u32` at `entry` after the checks of
    /// [`entry_point`](VirtualAlloc::entry_point): really on a real OS, by decoding it on the
    /// simulator.
    ///
    /// # Safety
    /// `entry` must start a complete function of that signature, flushed to the icache, and
    /// stay committed and executable until it returns.
    pub unsafe fn call(&self, entry: usize) -> Result<u32> {
        let entry = self.entry_point(entry)?;
        // SAFETY: forwarded to the caller; the checks above hold at the call.
        unsafe { self.os.call(entry) }
    }
}

/// `ExecuteReadWrite` is only for `Rwx` regions.
fn check_wx(strategy: WxStrategy, protection: Protection) -> Result<()> {
    if protection == Protection::ExecuteReadWrite && strategy != WxStrategy::Rwx {
        Err(Error::WxViolation {
            strategy,
            protection,
        })
    } else {
        Ok(())
    }
}

impl<O: Os> Drop for VirtualAlloc<O> {
    fn drop(&mut self) {
        for (_, region) in self.regions.drain() {
            let mut state = lock(&region.state);
            if !state.released && !self.is_carved(&region.info) {
                // SAFETY: the allocator is going away, and with it every use of its regions.
                let _ = unsafe { reserve::release(&self.os, &region.info, &mut state.shared) };
            }
            state.released = true;
        }
        if let Some(range) = &mut self.code_range {
            // SAFETY: as above; the carved regions go with the span.
            let _ = unsafe { range.release(&self.os) };
        }
    }
}

static_assertions::assert_impl_all!(VirtualAlloc<crate::sim::SimOs>: Send, Sync);
