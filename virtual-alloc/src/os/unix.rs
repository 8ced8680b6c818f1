//! The POSIX calls Linux and macOS share, each returning codeheap's error with errno kept.

use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::os::SysCall;
use crate::protection::Protection;
use crate::word::Word;

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(super) fn last_error(call: SysCall) -> Error {
    Error::from_errno(call, errno())
}

pub(super) fn prot_flags(protection: Protection) -> libc::c_int {
    match protection {
        Protection::NoAccess => libc::PROT_NONE,
        Protection::ReadOnly => libc::PROT_READ,
        Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        Protection::ExecuteRead => libc::PROT_READ | libc::PROT_EXEC,
        Protection::ExecuteReadWrite => libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
    }
}

pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// `mmap`; `at` adds `MAP_FIXED`.
///
/// # Safety
/// With `at`, the range must be owned by the caller: it is replaced.
pub(super) unsafe fn mmap(
    at: Option<usize>,
    len: usize,
    protection: Protection,
    flags: libc::c_int,
    fd: libc::c_int,
    offset: usize,
) -> Result<usize> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Error::SizeOverflow { size: offset })?;
    let (hint, flags) = match at {
        Some(addr) => (addr, flags | libc::MAP_FIXED),
        None => (0, flags),
    };
    // SAFETY: without MAP_FIXED the kernel picks a free range; with it the caller promised
    // the range is theirs to replace.
    unsafe { checked_mmap(hint, len, prot_flags(protection), flags, fd, offset) }
}

/// `mmap` of `len` bytes of inaccessible memory with `flags`, at `hint` if that range is
/// free, else wherever the kernel puts it (never `MAP_FIXED`: nothing is replaced).
pub(super) fn map_reserve(len: usize, hint: Option<usize>, flags: libc::c_int) -> Result<usize> {
    debug_assert_eq!(flags & libc::MAP_FIXED, 0);
    // SAFETY: without MAP_FIXED the address is only a hint; the kernel maps a free range.
    unsafe { checked_mmap(hint.unwrap_or(0), len, libc::PROT_NONE, flags, -1, 0) }
}

/// `mmap` with its failure as an error.
///
/// # Safety
/// As `mmap` itself: with `MAP_FIXED` in `flags`, the range at `addr` is replaced.
unsafe fn checked_mmap(
    addr: usize,
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: libc::c_int,
    offset: libc::off_t,
) -> Result<usize> {
    // SAFETY: forwarded to the caller.
    let mapped = unsafe { libc::mmap(addr as *mut libc::c_void, len, prot, flags, fd, offset) };
    if mapped == libc::MAP_FAILED {
        Err(last_error(SysCall::Mmap))
    } else {
        Ok(mapped as usize)
    }
}

/// # Safety
/// The caller owns the range and nothing uses it.
pub(super) unsafe fn munmap(addr: usize, len: usize) -> Result<()> {
    // SAFETY: forwarded to the caller.
    let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error(SysCall::Munmap))
    }
}

/// # Safety
/// The caller owns the range.
pub(super) unsafe fn mprotect(addr: usize, len: usize, protection: Protection) -> Result<()> {
    // SAFETY: forwarded to the caller.
    let rc = unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot_flags(protection)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error(SysCall::Mprotect))
    }
}

/// # Safety
/// The caller owns the range and may lose its contents.
#[cfg(target_os = "macos")]
pub(super) unsafe fn madvise(addr: usize, len: usize, advice: libc::c_int) -> Result<()> {
    loop {
        // SAFETY: forwarded to the caller.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) };
        if rc == 0 {
            return Ok(());
        }
        if errno() != libc::EAGAIN {
            return Err(last_error(SysCall::Madvise));
        }
    }
}

pub(super) fn close(fd: libc::c_int) -> Result<()> {
    // SAFETY: closing a descriptor this crate created and owns.
    let rc = unsafe { libc::close(fd) };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error(SysCall::Close))
    }
}

/// # Safety
/// `addr..addr+bytes.len()` is mapped writable and not aliased by a reference.
#[inline]
pub(super) unsafe fn write(addr: usize, bytes: &[u8]) {
    // SAFETY: forwarded to the caller; `bytes` cannot overlap code memory the caller owns.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}

/// # Safety
/// `addr..addr+word.len()` is mapped writable and not aliased by a reference.
#[inline]
pub(super) unsafe fn store(addr: usize, word: Word) -> Result<()> {
    if !addr.is_multiple_of(word.len()) {
        return Err(Error::Unaligned {
            addr,
            align: word.len(),
        });
    }
    // Release: what was written before the store (the code a patched branch now leads to)
    // is visible before it is.
    let order = Ordering::Release;
    // SAFETY: forwarded to the caller: writable, aligned to the width (checked above), and
    // no Rust reference aliases it, so an atomic view of it for this one store is sound.
    unsafe {
        match word {
            Word::U8(v) => AtomicU8::from_ptr(addr as *mut u8).store(v, order),
            Word::U16(v) => AtomicU16::from_ptr(addr as *mut u16).store(v, order),
            Word::U32(v) => AtomicU32::from_ptr(addr as *mut u32).store(v, order),
            Word::U64(v) => AtomicU64::from_ptr(addr as *mut u64).store(v, order),
        }
    }
    Ok(())
}

/// # Safety
/// `addr..addr+len` is mapped writable and not aliased by a reference.
#[inline]
pub(super) unsafe fn fill(addr: usize, len: usize, pattern: &[u8]) {
    // SAFETY: forwarded to the caller: the range is writable and unaliased for its length.
    let buf = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) };
    super::fill_pattern(buf, pattern);
}

/// # Safety
/// `addr..addr+buf.len()` is mapped readable.
#[inline]
pub(super) unsafe fn read(addr: usize, buf: &mut [u8]) {
    // SAFETY: forwarded to the caller.
    unsafe { ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
}

/// # Safety
/// `entry` starts a complete `extern "C" fn() -> u32` the calling thread may run.
pub(super) unsafe fn call(entry: usize) -> u32 {
    // SAFETY: forwarded to the caller.
    let function: extern "C" fn() -> u32 = unsafe { core::mem::transmute(entry) };
    function()
}

/// The `Os` methods that reach memory directly: the same on every real OS.
macro_rules! direct_memory_access {
    () => {
        #[inline]
        unsafe fn flush_icache(&self, addr: usize, len: usize) -> Result<()> {
            // SAFETY: forwarded to the caller: the range is mapped and readable.
            unsafe { crate::os::icache::flush(addr, len) };
            Ok(())
        }

        #[inline]
        unsafe fn write(&self, addr: usize, bytes: &[u8]) -> Result<()> {
            // SAFETY: forwarded to the caller.
            unsafe { crate::os::unix::write(addr, bytes) };
            Ok(())
        }

        #[inline]
        unsafe fn store(&self, addr: usize, word: crate::Word) -> Result<()> {
            // SAFETY: forwarded to the caller.
            unsafe { crate::os::unix::store(addr, word) }
        }

        #[inline]
        unsafe fn fill(&self, addr: usize, len: usize, pattern: &[u8]) -> Result<()> {
            // SAFETY: forwarded to the caller.
            unsafe { crate::os::unix::fill(addr, len, pattern) };
            Ok(())
        }

        #[inline]
        unsafe fn read(&self, addr: usize, buf: &mut [u8]) -> Result<()> {
            // SAFETY: forwarded to the caller.
            unsafe { crate::os::unix::read(addr, buf) };
            Ok(())
        }

        unsafe fn call(&self, entry: usize) -> Result<u32> {
            // SAFETY: forwarded to the caller.
            Ok(unsafe { crate::os::unix::call(entry) })
        }
    };
}
pub(super) use direct_memory_access;
