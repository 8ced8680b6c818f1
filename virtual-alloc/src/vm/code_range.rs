//! A code range: one span of address space reserved up front, from which every region of
//! the allocator's strategy is carved, so that all its code lies within one span.
//!
//! A JIT that calls between its functions, or from them into the engine's helpers, with
//! direct branches needs its code within their reach: `call rel32` reaches ±2 GiB on
//! x86-64, `bl` ±128 MiB on aarch64 ([`Arch::call_reach`](crate::Arch::call_reach)). Regions
//! mapped one by one land wherever `mmap` puts them. V8's code range, SpiderMonkey's 2 GiB
//! executable region, JavaScriptCore's fixed pool and ChakraCore's
//! `PreReservedVirtualAllocWrapper` reserve one span instead; so does this.
//!
//! The span is reserved as one region of the strategy would be (`reserve.rs`), but not
//! registered: the regions carved from it are. Carving is the MAP_JIT region's
//! ([`JitRegion`]): first fit at the granularity, given-back spans merging with their free
//! neighbours. A region given back has its memory returned to the OS (as a decommit does)
//! and its span kept reserved for the next region. Under `DualMap` the one memfd backs the
//! whole span; its writable view is inaccessible except over carved regions, so a write
//! through a stale address faults as it would after a region's own views were unmapped.

use super::region::RegionInfo;
use super::reserve;
use crate::error::{Error, Result};
use crate::os::{JitRegion, Os, SharedMemory};
use crate::protection::Protection;
use crate::strategy::WxStrategy;
use crate::sync::{Mutex, lock};

/// Where a code range goes ([`VirtualAlloc::with_code_range`](crate::VirtualAlloc::with_code_range)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRangeConfig {
    /// Bytes of address space, rounded up to the allocation granularity.
    pub size: usize,
    /// An address the range must lie within call reach of: the range and this address
    /// together fit in [`Arch::call_reach`](crate::Arch::call_reach) bytes. Typically a
    /// function of the engine's own that its JIT code calls directly. `None`: anywhere.
    pub near: Option<usize>,
    /// The smallest span to settle for when there is no room for `size` bytes
    /// (`OutOfMemory`: the OS ran out of address space, as under a `RLIMIT_AS` limit;
    /// `MapJitRegionFull`: more than is left of the process's MAP_JIT region;
    /// `CodeRangeOutOfReach`: no place that large within reach of `near`): the size is halved
    /// until a span is reserved or the next half would be smaller than this. Equal to
    /// `size` (or larger), nothing smaller is tried.
    pub min_size: usize,
}

impl CodeRangeConfig {
    /// A range of `size` bytes, anywhere, not smaller.
    pub const fn new(size: usize) -> CodeRangeConfig {
        CodeRangeConfig {
            size,
            near: None,
            min_size: size,
        }
    }

    /// The same range, or a smaller one down to `min_size` bytes if the OS runs out of
    /// address space for it, as JavaScriptCore shrinks its pool under `RLIMIT_AS`.
    pub const fn or_smaller_down_to(self, min_size: usize) -> CodeRangeConfig {
        CodeRangeConfig { min_size, ..self }
    }

    /// The sizes to try, largest first: `size` (rounded up to `granularity`), then halves
    /// of it (each rounded up) while they are at least `min_size`. `ZeroSize` or
    /// `SizeOverflow` if `size` is 0 or cannot be rounded.
    pub(crate) fn sizes(&self, granularity: usize) -> Result<impl Iterator<Item = usize>> {
        if self.size == 0 {
            return Err(Error::ZeroSize);
        }
        let size = (self.size)
            .checked_next_multiple_of(granularity)
            .ok_or(Error::SizeOverflow { size: self.size })?;
        let min_size = self.min_size.max(1);
        let halves = core::iter::successors(Some(size), move |&size| {
            let half = (size / 2).next_multiple_of(granularity);
            (half < size && half >= min_size).then_some(half)
        });
        Ok(halves)
    }

    /// The same range, within call reach of `addr`.
    pub const fn near(self, addr: usize) -> CodeRangeConfig {
        CodeRangeConfig {
            near: Some(addr),
            ..self
        }
    }
}

/// Places tried for a range of `size` bytes within `reach` of `near`: `HINT_STEPS`
/// distances across the room to spare, nearest first, below `near` before above it at
/// each (above a program's text lies its `brk` heap, which grows upwards). The OS takes a
/// hint only where nothing is mapped yet, and around a program's text (its libraries, its
/// heap, under qemu-user the emulator's own mappings) few places are free: a handful of
/// hints are often all refused.
fn hints(near: usize, size: usize, reach: usize, granularity: usize) -> Vec<usize> {
    let step = reach.saturating_sub(size) / HINT_STEPS;
    let mut hints = Vec::with_capacity(2 * HINT_STEPS);
    for k in 0..HINT_STEPS {
        let gap = step * k + step / 2;
        if let Some(base) = near.checked_sub(size + gap) {
            hints.push(base - base % granularity);
        }
        let above = near.checked_add(gap + 1);
        if let Some(base) = above.and_then(|addr| addr.checked_next_multiple_of(granularity)) {
            hints.push(base);
        }
    }
    hints
}

/// How many distances [`hints`] tries on each side of the address.
const HINT_STEPS: usize = 16;

/// Whether `span` and `near` together fit in `reach` bytes.
fn within_reach(span: &RegionInfo, near: usize, reach: usize) -> bool {
    let low = span.base.min(near);
    let high = span.end().max(near.saturating_add(1));
    high - low <= reach
}

#[derive(Debug)]
pub(super) struct CodeRange {
    /// The whole span: where it runs, where it is written, and its strategy.
    pub(super) span: RegionInfo,
    /// The memfd behind a `DualMap` span.
    shared: Option<SharedMemory>,
    /// Which parts of the span no region holds.
    free: Mutex<JitRegion>,
}

impl CodeRange {
    /// Reserves a span of `size` bytes (a multiple of `granularity`) for `strategy`,
    /// within `reach` of `near` if given: tried at a few places, each placed elsewhere
    /// unmapped again; `CodeRangeOutOfReach` if none was near enough.
    pub(super) fn reserve_near<O: Os>(
        os: &O,
        strategy: WxStrategy,
        size: usize,
        granularity: usize,
        near: Option<(usize, usize)>,
    ) -> Result<CodeRange> {
        let Some((near, reach)) = near else {
            return Self::reserve(os, strategy, size, granularity, None);
        };
        if size >= reach {
            return Err(Error::CodeRangeOutOfReach { near, size });
        }
        let mut tries = hints(near, size, reach, granularity);
        if strategy == WxStrategy::MapJit {
            // Carved from the process's one MAP_JIT region: a hint cannot move it.
            tries.truncate(1);
        }
        for hint in tries {
            let mut range = Self::reserve(os, strategy, size, granularity, Some(hint))?;
            if within_reach(&range.span, near, reach) {
                return Ok(range);
            }
            // SAFETY: the span was just made and nothing knows it.
            let _ = unsafe { range.release(os) };
        }
        Err(Error::CodeRangeOutOfReach { near, size })
    }

    /// Reserves a span of `size` bytes (a multiple of `granularity`) for `strategy`, at
    /// `hint` if that range is free.
    fn reserve<O: Os>(
        os: &O,
        strategy: WxStrategy,
        size: usize,
        granularity: usize,
        hint: Option<usize>,
    ) -> Result<CodeRange> {
        let (span, mut shared) = reserve::reserve(os, strategy, size, granularity, hint)?;
        if strategy == WxStrategy::DualMap {
            // SAFETY: the writable view was just mapped and nothing knows it yet.
            let hidden = unsafe { os.protect(span.write_base, size, Protection::NoAccess) };
            if let Err(err) = hidden {
                // SAFETY: the span was just made and is unused.
                let _ = unsafe { reserve::release(os, &span, &mut shared) };
                return Err(err);
            }
        }
        Ok(CodeRange {
            span,
            shared,
            free: Mutex::new(JitRegion::mapped_at(span.base, size)),
        })
    }

    /// Whether `base` lies in the span: the region there was carved from it.
    pub(super) fn holds(&self, base: usize) -> bool {
        (self.span.base..self.span.end()).contains(&base)
    }

    /// The memfd behind a `DualMap` span, and where `addr` (in the span) lies in it.
    pub(super) fn shared_at(&self, addr: usize) -> Option<(&SharedMemory, usize)> {
        let shared = self.shared.as_ref()?;
        Some((shared, addr - self.span.base))
    }

    /// Bytes of the span no region holds.
    pub(super) fn free_bytes(&self) -> usize {
        lock(&self.free).free_bytes()
    }

    /// A region of `size` bytes (a multiple of the page) at a multiple of `granularity`,
    /// its pages reserved; `CodeRangeFull` if no free span fits, and nothing changes.
    pub(super) fn carve<O: Os>(
        &self,
        os: &O,
        size: usize,
        granularity: usize,
    ) -> Result<RegionInfo> {
        let full = Error::CodeRangeFull {
            requested: size,
            range: self.span.size,
        };
        let mut free = lock(&self.free);
        let base = free
            .carve(size, granularity, self.span.size, |_| Err(full.clone()))
            .map_err(|_| full)?;
        let region = RegionInfo {
            base,
            size,
            write_base: self.span.write_address(base),
            strategy: self.span.strategy,
        };
        if self.span.strategy == WxStrategy::DualMap {
            // SAFETY: the writable view of a span just carved, which nothing else holds.
            let shown = unsafe { os.protect(region.write_base, size, Protection::ReadWrite) };
            if let Err(err) = shown {
                free.give_back(base, size);
                return Err(err);
            }
        }
        Ok(region)
    }

    /// Takes back a carved region whose pages have gone back to the OS (decommitted): its
    /// span, still reserved, goes back to the free spans.
    ///
    /// # Safety
    /// `region` was carved from this range, is decommitted, and nothing uses it any more.
    pub(super) unsafe fn give_back<O: Os>(&self, os: &O, region: &RegionInfo) {
        if region.strategy == WxStrategy::DualMap {
            // Hiding the writable view only turns a stale write into a fault. Should the OS
            // refuse, the span is free all the same: the next region carved there shows it
            // again, and its pages were discarded.
            // SAFETY: the region's writable view, which the caller no longer uses.
            let _ = unsafe { os.protect(region.write_base, region.size, Protection::NoAccess) };
        }
        lock(&self.free).give_back(region.base, region.size);
    }

    /// Unmaps the span, and with it every region carved from it.
    ///
    /// # Safety
    /// Nothing uses the span any more.
    pub(super) unsafe fn release<O: Os>(&mut self, os: &O) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { reserve::release(os, &self.span, &mut self.shared) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const GRANULE: usize = 64 << 10;

    fn span(base: usize, size: usize) -> RegionInfo {
        RegionInfo {
            base,
            size,
            write_base: base,
            strategy: WxStrategy::Protect,
        }
    }

    #[test]
    fn sizes_halve_rounded_up_to_the_granularity_down_to_the_minimum() {
        let sizes =
            |config: CodeRangeConfig| -> Vec<usize> { config.sizes(GRANULE).unwrap().collect() };
        let new = CodeRangeConfig::new;
        assert_eq!(sizes(new(MIB)), [MIB]);
        assert_eq!(sizes(new(MIB).or_smaller_down_to(2 * MIB)), [MIB]);
        assert_eq!(
            sizes(new(MIB).or_smaller_down_to(MIB / 4)),
            [MIB, MIB / 2, MIB / 4]
        );
        // Each size rounded up: 100 KiB is 128, then 64; 32 would be 64 again.
        assert_eq!(
            sizes(new(100 << 10).or_smaller_down_to(0)),
            [2 * GRANULE, GRANULE]
        );
        assert_eq!(
            sizes(new(3 * GRANULE).or_smaller_down_to(GRANULE)),
            [3 * GRANULE, 2 * GRANULE, GRANULE]
        );
        assert!(matches!(
            new(0).sizes(GRANULE).map(drop),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            new(usize::MAX).sizes(GRANULE).map(drop),
            Err(Error::SizeOverflow { size: usize::MAX })
        ));
    }

    #[test]
    fn every_hint_would_put_the_range_within_reach_below_first() {
        let (near, size, reach) = (0x5555_5555_1234, 64 * MIB, 2048 * MIB);
        let tried = hints(near, size, reach, GRANULE);
        assert_eq!(tried.len(), 2 * HINT_STEPS);
        for (i, &hint) in tried.iter().enumerate() {
            assert!(hint.is_multiple_of(GRANULE));
            assert_eq!(hint + size <= near, i % 2 == 0, "below, then above");
            assert!(hint > near || hint + size <= near, "clear of the address");
            assert!(within_reach(&span(hint, size), near, reach), "{hint:#x}");
        }
        let distance = |&hint: &usize| hint.abs_diff(near);
        let (below, above): (Vec<usize>, Vec<usize>) = tried.iter().partition(|&&h| h < near);
        assert!(below.iter().map(distance).is_sorted(), "nearest first");
        assert!(above.iter().map(distance).is_sorted(), "nearest first");
        // The farthest leave less than a step of the reach unused.
        assert!(distance(below.last().unwrap()) + size > reach - reach / HINT_STEPS);
        // Near the bottom of the address space only the places above are left.
        let low = hints(16 * MIB, size, reach, GRANULE);
        assert_eq!(low.len(), HINT_STEPS);
        assert!(low.iter().all(|&hint| hint > 16 * MIB));
    }

    #[test]
    fn reach_counts_the_range_and_the_address_together() {
        let reach = 128 * MIB;
        // The address just past the range's end, and the range's last byte reach back to it.
        assert!(within_reach(
            &span(0x1000_0000, reach - 1),
            0x1000_0000 + reach - 1,
            reach
        ));
        assert!(!within_reach(
            &span(0x1000_0000, reach - 1),
            0x1000_0000 + reach,
            reach
        ));
        // The address below the range.
        assert!(within_reach(
            &span(0x1000_0000 + MIB, reach - MIB),
            0x1000_0000,
            reach
        ));
        assert!(!within_reach(
            &span(0x1000_0000 + MIB, reach - MIB + 1),
            0x1000_0000,
            reach
        ));
        // Inside the range.
        assert!(within_reach(
            &span(0x1000_0000, reach),
            0x1000_0000 + 5,
            reach
        ));
    }
}
