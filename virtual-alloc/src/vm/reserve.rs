//! Making and unmaking regions, per strategy, with Windows' 64 KiB granularity.
//!
//! `mmap` aligns only to the page. Windows' `VirtualAlloc` (and ChakraCore, which asserts
//! it) gives 64 KiB-aligned reservations, so a reservation asks for `size + granularity -
//! page` bytes and unmaps the unaligned head and the tail. MAP_JIT reservations are ranges
//! of the process's one MAP_JIT region instead (the hardened runtime allows one; see
//! `os/jit_region.rs`), carved at the granularity and given back to it on release.
//!
//! Every step that fails undoes the steps before it: a failed reserve leaves no mapping and
//! no descriptor behind.

use super::region::RegionInfo;
use crate::error::{Error, Result};
use crate::os::{Os, SharedMemory};
use crate::protection::Protection;
use crate::strategy::WxStrategy;

/// Maps `size` bytes with `map` at a `granularity`-aligned address, trimming the excess.
fn map_aligned<O: Os>(
    os: &O,
    size: usize,
    granularity: usize,
    map: impl FnOnce(usize) -> Result<usize>,
) -> Result<usize> {
    let page = os.page_size();
    let slack = granularity.saturating_sub(page);
    let span = size
        .checked_add(slack)
        .ok_or(Error::SizeOverflow { size })?;
    let raw = map(span)?;
    let aligned = raw.next_multiple_of(granularity);
    let head = aligned - raw;
    let tail = span - head - size;
    let trimmed = (|| {
        if head > 0 {
            // SAFETY: the head is part of the mapping just made and unused.
            unsafe { os.unmap(raw, head) }?;
        }
        if tail > 0 {
            // SAFETY: the tail is part of the mapping just made and unused.
            unsafe { os.unmap(aligned + size, tail) }?;
        }
        Ok(())
    })();
    match trimmed {
        Ok(()) => Ok(aligned),
        Err(err) => {
            // SAFETY: the whole span is ours; unmapping what is left of it undoes the map.
            let _ = unsafe { os.unmap(raw, span) };
            Err(err)
        }
    }
}

fn map_reserve<O: Os>(os: &O, len: usize, hint: Option<usize>) -> Result<usize> {
    match hint {
        Some(hint) => os.map_reserve_near(len, hint),
        None => os.map_reserve(len),
    }
}

/// Reserves `size` bytes (a multiple of the page size) for `strategy`, at `hint` if that
/// range is free (MAP_JIT ranges are carved from the process's region, wherever that is).
pub(super) fn reserve<O: Os>(
    os: &O,
    strategy: WxStrategy,
    size: usize,
    granularity: usize,
    hint: Option<usize>,
) -> Result<(RegionInfo, Option<SharedMemory>)> {
    // The over-allocation must fit before anything is created.
    size.checked_add(granularity)
        .ok_or(Error::SizeOverflow { size })?;
    let info = |base, write_base| RegionInfo {
        base,
        size,
        write_base,
        strategy,
    };
    match strategy {
        WxStrategy::Protect | WxStrategy::Rwx => {
            let base = map_aligned(os, size, granularity, |len| map_reserve(os, len, hint))?;
            Ok((info(base, base), None))
        }
        WxStrategy::MapJit => {
            if !os.has_map_jit() {
                return Err(Error::StrategyUnavailable {
                    strategy,
                    reason: "this OS has no MAP_JIT",
                });
            }
            let base = os.map_jit(size, granularity)?;
            Ok((info(base, base), None))
        }
        WxStrategy::DualMap => {
            let shared = os.create_shared(size)?;
            match map_dual(os, &shared, size, granularity, hint) {
                Ok((base, write_base)) => Ok((info(base, write_base), Some(shared))),
                Err(err) => {
                    let _ = os.close_shared(shared);
                    Err(err)
                }
            }
        }
    }
}

/// Maps `shared` twice: an aligned executable view (inaccessible until committed) and a
/// writable view anywhere. Undoes itself on failure.
fn map_dual<O: Os>(
    os: &O,
    shared: &SharedMemory,
    size: usize,
    granularity: usize,
    hint: Option<usize>,
) -> Result<(usize, usize)> {
    let base = map_aligned(os, size, granularity, |len| map_reserve(os, len, hint))?;
    // SAFETY: `base..base + size` is the reservation just made; the view replaces it.
    let exec = unsafe { os.map_shared(shared, 0, size, Protection::NoAccess, Some(base)) };
    // SAFETY: nothing but this function knows the writable view's address yet.
    let write =
        exec.and_then(|_| unsafe { os.map_shared(shared, 0, size, Protection::ReadWrite, None) });
    match write {
        Ok(write_base) => Ok((base, write_base)),
        Err(err) => {
            // SAFETY: the reservation (or the view that replaced it) is ours and unused.
            let _ = unsafe { os.unmap(base, size) };
            Err(err)
        }
    }
}

/// Unmaps a region. The executable view goes first: if that fails nothing has changed
/// (the shared-memory object, if any, stays in `shared`).
/// A later step failing (which `munmap` and `close` on our own mappings do not do in
/// practice) is reported after the rest of the teardown was still attempted.
///
/// # Safety
/// Nothing uses the region any more.
pub(super) unsafe fn release<O: Os>(
    os: &O,
    info: &RegionInfo,
    shared: &mut Option<SharedMemory>,
) -> Result<()> {
    if info.strategy == WxStrategy::MapJit {
        // SAFETY: forwarded to the caller; the range was carved by `map_jit`.
        return unsafe { os.unmap_jit(info.base, info.size) };
    }
    // SAFETY: forwarded to the caller.
    unsafe { os.unmap(info.base, info.size) }?;
    let mut outcome = Ok(());
    if info.write_base != info.base {
        // SAFETY: the writable view belongs to the region being released.
        outcome = unsafe { os.unmap(info.write_base, info.size) };
    }
    if let Some(shared) = shared.take() {
        outcome = outcome.and(os.close_shared(shared));
    }
    outcome
}
