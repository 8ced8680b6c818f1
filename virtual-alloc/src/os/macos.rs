//! macOS: `mmap(MAP_JIT)` regions switched per thread, `sys_icache_invalidate`, and the
//! page size from the OS (16 KiB on Apple Silicon). MAP_JIT is never combined with
//! `MAP_FIXED` or `MAP_SHARED`, and MAP_JIT pages are never `mprotect`ed: this layer
//! turns protect calls on them into counted no-ops before they get here.

use std::sync::{Mutex, PoisonError};

use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::os::{JitRegion, Os, SharedMemory, SysCall, unix};
use crate::protection::Protection;
use crate::strategy::WxStrategy;

/// The real macOS operating system.
#[derive(Debug, Clone, Copy)]
pub struct MacOs {
    page_size: usize,
}

impl MacOs {
    /// The running kernel, with its page size read from `sysconf`.
    pub fn new() -> MacOs {
        MacOs {
            page_size: unix::page_size(),
        }
    }

    /// Sizes the process's one MAP_JIT region, from which every MAP_JIT reservation of
    /// every heap in the process is carved ([`JIT_REGION_SIZE`] unless set). Takes effect
    /// only before the first MAP_JIT reservation maps the region, and only for a non-zero
    /// multiple of the page size; returns whether the size was taken.
    pub fn set_jit_region_size(bytes: usize) -> bool {
        let mut region = JIT_REGION.lock().unwrap_or_else(PoisonError::into_inner);
        let page = unix::page_size();
        let takes = region.0.mapped().is_none() && bytes > 0 && bytes.is_multiple_of(page);
        if takes {
            region.1 = bytes;
        }
        takes
    }
}

impl Default for MacOs {
    fn default() -> Self {
        MacOs::new()
    }
}

/// Bytes of the process's one MAP_JIT region unless [`MacOs::set_jit_region_size`] says
/// otherwise: address space only until pages are written (JavaScriptCore's fixed executable
/// pool on Apple Silicon is of the same order). Reservations beyond it fail with
/// `MapJitRegionFull`.
pub const JIT_REGION_SIZE: usize = 1 << 30;

/// The process's MAP_JIT region, shared by every heap (the hardened runtime allows one),
/// and the size it is mapped with.
static JIT_REGION: Mutex<(JitRegion, usize)> = Mutex::new((JitRegion::new(), JIT_REGION_SIZE));

const PRIVATE_ANON: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON;

fn no_shared_memory() -> Error {
    Error::StrategyUnavailable {
        strategy: WxStrategy::DualMap,
        reason: "macOS has no memfd; Apple Silicon uses MAP_JIT",
    }
}

// SAFETY: every method forwards to the kernel, which hands out fresh ranges, and touches
// only the bytes it is given.
unsafe impl Os for MacOs {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn arch(&self) -> Arch {
        Arch::host()
    }

    fn has_map_jit(&self) -> bool {
        true
    }

    fn map_reserve(&self, len: usize) -> Result<usize> {
        unix::map_reserve(len, None, PRIVATE_ANON)
    }

    fn map_reserve_near(&self, len: usize, hint: usize) -> Result<usize> {
        unix::map_reserve(len, Some(hint), PRIVATE_ANON)
    }

    fn map_jit(&self, len: usize, align: usize) -> Result<usize> {
        let (region, size) = &mut *JIT_REGION.lock().unwrap_or_else(PoisonError::into_inner);
        region.carve(len, align, *size, |size| {
            let flags = PRIVATE_ANON | libc::MAP_JIT;
            // SAFETY: no MAP_FIXED: the kernel picks a free range.
            let mapped =
                unsafe { unix::mmap(None, size, Protection::ExecuteReadWrite, flags, -1, 0) };
            mapped.map_err(|err| match err {
                Error::Os { errno, .. } => Error::MapJitRefused { errno },
                other => other,
            })
        })
    }

    unsafe fn unmap_jit(&self, addr: usize, len: usize) -> Result<()> {
        let (region, _) = &mut *JIT_REGION.lock().unwrap_or_else(PoisonError::into_inner);
        if !region.is_handed_out(addr, len) {
            return Err(Error::from_errno(SysCall::Munmap, libc::EINVAL));
        }
        // SAFETY: the range is one the region handed out; the caller owns it and no longer
        // uses it.
        unsafe { unix::madvise(addr, len, libc::MADV_FREE_REUSABLE) }?;
        region.give_back(addr, len);
        Ok(())
    }

    fn create_shared(&self, _len: usize) -> Result<SharedMemory> {
        Err(no_shared_memory())
    }

    unsafe fn map_shared(
        &self,
        _shared: &SharedMemory,
        _offset: usize,
        _len: usize,
        _protection: Protection,
        _at: Option<usize>,
    ) -> Result<usize> {
        Err(no_shared_memory())
    }

    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { unix::munmap(addr, len) }
    }

    unsafe fn protect(&self, addr: usize, len: usize, protection: Protection) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { unix::mprotect(addr, len, protection) }
    }

    unsafe fn decommit_private(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: the caller owns the range (never MAP_JIT) and gives up its contents.
        unsafe { unix::mmap(Some(addr), len, Protection::NoAccess, PRIVATE_ANON, -1, 0) }.map(drop)
    }

    unsafe fn decommit_jit(&self, addr: usize, len: usize) -> Result<()> {
        // What JavaScriptCore does with JIT memory it no longer needs: the pages stay mapped
        // (MAP_JIT cannot be re-mapped in place) and the kernel may take their memory.
        // SAFETY: forwarded to the caller.
        unsafe { unix::madvise(addr, len, libc::MADV_FREE_REUSABLE) }
    }

    unsafe fn recommit_jit(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { unix::madvise(addr, len, libc::MADV_FREE_REUSE) }
    }

    fn discard_shared(&self, _shared: &SharedMemory, _offset: usize, _len: usize) -> Result<()> {
        Err(no_shared_memory())
    }

    fn close_shared(&self, shared: SharedMemory) -> Result<()> {
        unix::close(shared.fd())
    }

    /// macOS has no call that makes other threads synchronise their pipelines; Apple's
    /// porting guide asks only for `sys_icache_invalidate`, which `flush_icache` makes.
    fn sync_cores(&self) -> Result<()> {
        Ok(())
    }

    unix::direct_memory_access!();
}
