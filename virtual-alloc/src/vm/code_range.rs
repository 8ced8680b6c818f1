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
    /// Reserves a span of `size` bytes (a multiple of `granularity`) for `strategy`.
    pub(super) fn reserve<O: Os>(
        os: &O,
        strategy: WxStrategy,
        size: usize,
        granularity: usize,
    ) -> Result<CodeRange> {
        let (span, mut shared) = reserve::reserve(os, strategy, size, granularity)?;
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
