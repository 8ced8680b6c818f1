//! Linux: `mmap`/`mprotect`, re-`mmap` to decommit, `memfd_create` for dual mapping, and
//! `membarrier` to synchronise every core's pipeline.

use std::sync::OnceLock;

use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::os::{Os, SharedMemory, SysCall, unix};
use crate::protection::Protection;
use crate::strategy::WxStrategy;

/// The real Linux operating system.
#[derive(Debug, Clone, Copy)]
pub struct LinuxOs {
    page_size: usize,
}

impl LinuxOs {
    /// The running kernel, with its page size read from `sysconf`.
    pub fn new() -> LinuxOs {
        LinuxOs {
            page_size: unix::page_size(),
        }
    }
}

impl Default for LinuxOs {
    fn default() -> Self {
        LinuxOs::new()
    }
}

fn no_map_jit() -> Error {
    Error::StrategyUnavailable {
        strategy: WxStrategy::MapJit,
        reason: "MAP_JIT exists only on macOS",
    }
}

const PRIVATE_ANON: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// `memfd_create` with `MFD_EXEC` where the kernel knows it (6.3 and later warn without
/// it), plain `MFD_CLOEXEC` where it does not.
fn memfd_create() -> Result<libc::c_int> {
    let name = c"codeheap";
    for flags in [libc::MFD_CLOEXEC | libc::MFD_EXEC, libc::MFD_CLOEXEC] {
        // SAFETY: `name` is a NUL-terminated string; the call has no other preconditions.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 {
            return Ok(fd);
        }
        if unix::errno() != libc::EINVAL {
            break;
        }
    }
    Err(unix::last_error(SysCall::MemfdCreate))
}

// SAFETY: every method forwards to the kernel, which hands out fresh ranges, and touches
// only the bytes it is given.
unsafe impl Os for LinuxOs {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn arch(&self) -> Arch {
        Arch::host()
    }

    fn has_map_jit(&self) -> bool {
        false
    }

    fn map_reserve(&self, len: usize) -> Result<usize> {
        unix::map_reserve(len, None, PRIVATE_ANON)
    }

    fn map_reserve_near(&self, len: usize, hint: usize) -> Result<usize> {
        unix::map_reserve(len, Some(hint), PRIVATE_ANON)
    }

    fn map_jit(&self, _len: usize, _align: usize) -> Result<usize> {
        Err(no_map_jit())
    }

    unsafe fn unmap_jit(&self, _addr: usize, _len: usize) -> Result<()> {
        Err(no_map_jit())
    }

    fn create_shared(&self, len: usize) -> Result<SharedMemory> {
        let fd = memfd_create()?;
        let size = libc::off_t::try_from(len).map_err(|_| Error::SizeOverflow { size: len });
        // SAFETY: `fd` is the memfd just created.
        let truncated = size.and_then(|size| match unsafe { libc::ftruncate(fd, size) } {
            0 => Ok(()),
            _ => Err(unix::last_error(SysCall::Ftruncate)),
        });
        match truncated {
            Ok(()) => Ok(SharedMemory::new(fd, len)),
            Err(err) => {
                // The object is unusable; closing it is all that is left to undo.
                let _ = unix::close(fd);
                Err(err)
            }
        }
    }

    unsafe fn map_shared(
        &self,
        shared: &SharedMemory,
        offset: usize,
        len: usize,
        protection: Protection,
        at: Option<usize>,
    ) -> Result<usize> {
        let flags = libc::MAP_SHARED;
        // SAFETY: forwarded to the caller (who owns `at` if given).
        unsafe { unix::mmap(at, len, protection, flags, shared.fd(), offset) }
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
        // A fresh PROT_NONE mapping over the range frees its memory and makes any stale entry
        // point fault, in one call (ChakraCore's PAL does the same).
        // SAFETY: the caller owns the range and gives up its contents.
        unsafe { unix::mmap(Some(addr), len, Protection::NoAccess, PRIVATE_ANON, -1, 0) }.map(drop)
    }

    unsafe fn decommit_jit(&self, _addr: usize, _len: usize) -> Result<()> {
        Err(no_map_jit())
    }

    unsafe fn recommit_jit(&self, _addr: usize, _len: usize) -> Result<()> {
        Err(no_map_jit())
    }

    fn discard_shared(&self, shared: &SharedMemory, offset: usize, len: usize) -> Result<()> {
        let to_off =
            |n: usize| libc::off_t::try_from(n).map_err(|_| Error::SizeOverflow { size: n });
        let (offset, len) = (to_off(offset)?, to_off(len)?);
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: punching a hole in our own memfd; mappings of it read zeros afterwards.
        let rc = unsafe { libc::fallocate(shared.fd(), mode, offset, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(unix::last_error(SysCall::Fallocate))
        }
    }

    fn close_shared(&self, shared: SharedMemory) -> Result<()> {
        unix::close(shared.fd())
    }

    fn sync_cores(&self) -> Result<()> {
        static REGISTERED: OnceLock<Result<()>> = OnceLock::new();
        REGISTERED
            .get_or_init(|| membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE))
            .clone()?;
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)
    }

    unix::direct_memory_access!();
}

/// `membarrier`'s commands (`uapi/linux/membarrier.h`): an IPI to every core running one of
/// the process's threads, each returning from it through a core-serialising instruction;
/// threads not running then serialise when they are scheduled again. The process must
/// have registered its intent first (Linux 4.16 and later).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_ulong = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_ulong = 1 << 6;

fn membarrier(cmd: libc::c_ulong) -> Result<()> {
    // SAFETY: membarrier takes no pointers; the variadic arguments are passed as full
    // registers (plain integer literals would leave their upper halves undefined).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(unix::last_error(SysCall::Membarrier))
    }
}
