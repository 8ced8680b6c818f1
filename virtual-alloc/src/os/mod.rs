//! The narrow interface between codeheap and an operating system.
//!
//! Each method is one primitive the strategies are built from; none of them keeps state
//! about regions (that is [`VirtualAlloc`](crate::VirtualAlloc)'s job). Three
//! implementations exist: Linux and macOS ([`NativeOs`] on each) and the simulated OS
//! ([`SimOs`](crate::sim::SimOs)).
//!
//! Memory is reached through the trait too (`write`, `fill`, `read`, `call`): on a real OS
//! these are plain loads, stores and calls; on the simulator they are checked against the
//! page table and the calling thread's mode, which is how the simulator catches a write in
//! execute mode or a run of stale instructions.

use crate::arch::Arch;
use crate::error::Result;
use crate::protection::Protection;
use crate::word::Word;

mod icache;
mod jit_region;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod unix;

pub use jit_region::JitRegion;
#[cfg(target_os = "linux")]
pub use linux::LinuxOs as NativeOs;
#[cfg(target_os = "macos")]
pub use macos::{JIT_REGION_SIZE, MacOs as NativeOs};

/// The system calls an [`Os`] makes, named in errors and counted by the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SysCall {
    /// `mmap`
    Mmap,
    /// `munmap`
    Munmap,
    /// `mprotect`
    Mprotect,
    /// `madvise`
    Madvise,
    /// `memfd_create`
    MemfdCreate,
    /// `ftruncate`
    Ftruncate,
    /// `fallocate`
    Fallocate,
    /// `close`
    Close,
    /// `membarrier`
    Membarrier,
}

impl SysCall {
    /// Every system call, for tables.
    pub const ALL: [SysCall; 9] = [
        SysCall::Mmap,
        SysCall::Munmap,
        SysCall::Mprotect,
        SysCall::Madvise,
        SysCall::MemfdCreate,
        SysCall::Ftruncate,
        SysCall::Fallocate,
        SysCall::Close,
        SysCall::Membarrier,
    ];

    /// The C name of the call.
    pub const fn name(self) -> &'static str {
        match self {
            SysCall::Mmap => "mmap",
            SysCall::Munmap => "munmap",
            SysCall::Mprotect => "mprotect",
            SysCall::Madvise => "madvise",
            SysCall::MemfdCreate => "memfd_create",
            SysCall::Ftruncate => "ftruncate",
            SysCall::Fallocate => "fallocate",
            SysCall::Close => "close",
            SysCall::Membarrier => "membarrier",
        }
    }
}

impl core::fmt::Display for SysCall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A shared-memory object (a memfd) that backs a dual-mapped region.
#[derive(Debug, PartialEq, Eq)]
pub struct SharedMemory {
    fd: i32,
    len: usize,
}

impl SharedMemory {
    /// Wraps a descriptor of `len` bytes. Only an [`Os`] implementation creates these.
    pub const fn new(fd: i32, len: usize) -> SharedMemory {
        SharedMemory { fd, len }
    }

    /// The file descriptor.
    pub const fn fd(&self) -> i32 {
        self.fd
    }

    /// The object's size in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the object has no bytes (never true for objects codeheap creates).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The operating system primitives codeheap is built from.
///
/// Addresses are plain `usize`s: on a real OS they are process addresses, on the simulator
/// they are addresses in its own address space and mean nothing to the process.
///
/// # Safety
/// Implementations must behave as the documentation of each method says; the safe API of
/// [`VirtualAlloc`](crate::VirtualAlloc) relies on it for memory safety. In particular the
/// `map_*` methods must return ranges that overlap no live mapping, and `write`, `fill`,
/// `read` and `call` must touch only the bytes they are given.
pub unsafe trait Os: Send + Sync {
    /// The page size (4 KiB on most Linux machines, 16 KiB on Apple Silicon).
    fn page_size(&self) -> usize;

    /// The instruction set code runs as.
    fn arch(&self) -> Arch;

    /// Whether `map_jit` can work here (macOS).
    fn has_map_jit(&self) -> bool;

    /// Whether addresses are simulated rather than the process's own (so nothing may be
    /// handed to the process's own services, such as its unwinder).
    fn is_simulated(&self) -> bool {
        false
    }

    /// Maps `len` bytes (a multiple of the page size) of inaccessible private memory
    /// anywhere: a reservation.
    fn map_reserve(&self, len: usize) -> Result<usize>;

    /// [`map_reserve`](Os::map_reserve) at `hint` if that range is free; elsewhere if not
    /// (a hint, never `MAP_FIXED`). By default the hint is ignored (the simulator's
    /// addresses mean nothing to the process).
    fn map_reserve_near(&self, len: usize, hint: usize) -> Result<usize> {
        let _ = hint;
        self.map_reserve(len)
    }

    /// A range of `len` bytes (a multiple of the page size) of `MAP_JIT` memory at a
    /// multiple of `align` (a power of two), readable, writable and executable as far as the
    /// page tables go; each thread's mode decides. Under the hardened runtime a process may
    /// create only one MAP_JIT region, so the range is carved from the process's one region
    /// ([`JitRegion`]), mapped at the first call. Never `MAP_FIXED`, never `MAP_SHARED`.
    fn map_jit(&self, len: usize, align: usize) -> Result<usize>;
    /// Gives a range `map_jit` handed out back to the process's MAP_JIT region: its memory
    /// goes back to the OS, the mapping stays (it is the region's).
    ///
    /// # Safety
    /// The caller owns the range and nothing uses it any more.
    unsafe fn unmap_jit(&self, addr: usize, len: usize) -> Result<()>;

    /// Creates a shared-memory object of `len` bytes (a memfd).
    fn create_shared(&self, len: usize) -> Result<SharedMemory>;

    /// Maps `len` bytes of `shared` from `offset` with `protection`, at `at` (replacing
    /// what is there) or anywhere if `at` is `None`. Returns the address.
    ///
    /// # Safety
    /// If `at` is given, the range must be a reservation the caller owns.
    unsafe fn map_shared(
        &self,
        shared: &SharedMemory,
        offset: usize,
        len: usize,
        protection: Protection,
        at: Option<usize>,
    ) -> Result<usize>;

    /// Unmaps a range.
    ///
    /// # Safety
    /// The caller owns the range and nothing uses it any more.
    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<()>;

    /// Changes the protection of a range (`mprotect`).
    ///
    /// # Safety
    /// The caller owns the range; no reference into it outlives a protection that forbids
    /// its use.
    unsafe fn protect(&self, addr: usize, len: usize, protection: Protection) -> Result<()>;

    /// Replaces private pages with fresh inaccessible ones, giving their memory back.
    ///
    /// # Safety
    /// The caller owns the range and nothing uses its contents any more.
    unsafe fn decommit_private(&self, addr: usize, len: usize) -> Result<()>;

    /// Gives the memory of `MAP_JIT` pages back, keeping the mapping.
    ///
    /// # Safety
    /// The caller owns the range and nothing uses its contents any more.
    unsafe fn decommit_jit(&self, addr: usize, len: usize) -> Result<()>;

    /// Takes back `MAP_JIT` pages given back by `decommit_jit`.
    ///
    /// # Safety
    /// The caller owns the range.
    unsafe fn recommit_jit(&self, addr: usize, len: usize) -> Result<()>;

    /// Drops the contents of `len` bytes of `shared` from `offset`; they read as zero after.
    fn discard_shared(&self, shared: &SharedMemory, offset: usize, len: usize) -> Result<()>;

    /// Closes a shared-memory object. Its memory lives on while it is still mapped.
    fn close_shared(&self, shared: SharedMemory) -> Result<()>;

    /// Makes instructions written to the range visible to instruction fetch.
    ///
    /// # Safety
    /// The range must be mapped and readable.
    unsafe fn flush_icache(&self, addr: usize, len: usize) -> Result<()>;

    /// Copies `bytes` to `addr`.
    ///
    /// # Safety
    /// The range must be mapped writable for the calling thread and not aliased by a
    /// Rust reference.
    unsafe fn write(&self, addr: usize, bytes: &[u8]) -> Result<()>;

    /// Writes `word` to `addr` with one single-copy-atomic store, so that a thread fetching
    /// those bytes as instructions meanwhile sees all of the old ones or all of the new (see
    /// [`Word`]). `Unaligned` unless `addr` is a multiple of the word's width.
    ///
    /// # Safety
    /// As for [`write`](Os::write).
    unsafe fn store(&self, addr: usize, word: Word) -> Result<()>;

    /// Fills `len` bytes at `addr` with `pattern` repeated; a last partial repetition is
    /// zero-filled instead.
    ///
    /// # Safety
    /// As for [`write`](Os::write).
    unsafe fn fill(&self, addr: usize, len: usize, pattern: &[u8]) -> Result<()>;

    /// Copies bytes at `addr` into `buf`.
    ///
    /// # Safety
    /// The range must be mapped readable.
    unsafe fn read(&self, addr: usize, buf: &mut [u8]) -> Result<()>;

    /// Makes every thread of the process run a context-synchronising instruction
    /// (serialising, on x86-64) before it runs anything else, so that no thread keeps
    /// running instructions it fetched before the last icache flush. aarch64 asks this of a
    /// thread about to run code another thread wrote (or, in new memory, code it ran
    /// before): the flush only invalidates the caches, not what a core has already fetched.
    /// Linux: `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)`, the process registered on first
    /// use. macOS has no such call (Apple documents `sys_icache_invalidate` alone): nothing.
    fn sync_cores(&self) -> Result<()>;

    /// Calls the function at `entry` as `extern "C" fn() -> u32`.
    ///
    /// # Safety
    /// `entry` must be the start of a complete function with that signature, in memory
    /// executable by the calling thread, its instructions made visible by `flush_icache`.
    unsafe fn call(&self, entry: usize) -> Result<u32>;
}

/// Fills `buf` with `pattern` repeated, zeroing a last partial repetition.
///
/// Trap fills are on every free, so this runs at memset speed: a one-byte pattern is a
/// `fill`, a longer one is written once and then doubled with `copy_within`, a handful of
/// `memcpy` calls however long the buffer. Inlined, so that a one-byte pattern (x86-64's
/// `int3`) costs the caller a `memset` call and nothing more.
#[inline]
pub(crate) fn fill_pattern(buf: &mut [u8], pattern: &[u8]) {
    match *pattern {
        [] => buf.fill(0),
        [byte] => buf.fill(byte),
        _ => fill_repeating(buf, pattern),
    }
}

/// [`fill_pattern`] for a pattern of two bytes or more.
fn fill_repeating(buf: &mut [u8], pattern: &[u8]) {
    let whole = buf.len() / pattern.len() * pattern.len();
    let (body, tail) = buf.split_at_mut(whole);
    if let Some(first) = body.get_mut(..pattern.len()) {
        first.copy_from_slice(pattern);
        let mut filled = pattern.len();
        while filled < body.len() {
            let count = filled.min(body.len() - filled);
            body.copy_within(..count, filled);
            filled += count;
        }
    }
    tail.fill(0);
}

// SAFETY: every call is forwarded to the shared implementation, whose guarantees carry over
// unchanged. Sharing lets a test keep its simulator after the allocator that used it drops.
unsafe impl<T: Os + ?Sized> Os for std::sync::Arc<T> {
    fn page_size(&self) -> usize {
        (**self).page_size()
    }

    fn arch(&self) -> Arch {
        (**self).arch()
    }

    fn has_map_jit(&self) -> bool {
        (**self).has_map_jit()
    }

    fn is_simulated(&self) -> bool {
        (**self).is_simulated()
    }

    fn map_reserve(&self, len: usize) -> Result<usize> {
        (**self).map_reserve(len)
    }

    fn map_reserve_near(&self, len: usize, hint: usize) -> Result<usize> {
        (**self).map_reserve_near(len, hint)
    }

    fn map_jit(&self, len: usize, align: usize) -> Result<usize> {
        (**self).map_jit(len, align)
    }
    unsafe fn unmap_jit(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).unmap_jit(addr, len) }
    }

    fn create_shared(&self, len: usize) -> Result<SharedMemory> {
        (**self).create_shared(len)
    }

    unsafe fn map_shared(
        &self,
        shared: &SharedMemory,
        offset: usize,
        len: usize,
        protection: Protection,
        at: Option<usize>,
    ) -> Result<usize> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).map_shared(shared, offset, len, protection, at) }
    }

    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).unmap(addr, len) }
    }

    unsafe fn protect(&self, addr: usize, len: usize, protection: Protection) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).protect(addr, len, protection) }
    }

    unsafe fn decommit_private(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).decommit_private(addr, len) }
    }

    unsafe fn decommit_jit(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).decommit_jit(addr, len) }
    }

    unsafe fn recommit_jit(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).recommit_jit(addr, len) }
    }

    fn discard_shared(&self, shared: &SharedMemory, offset: usize, len: usize) -> Result<()> {
        (**self).discard_shared(shared, offset, len)
    }

    fn close_shared(&self, shared: SharedMemory) -> Result<()> {
        (**self).close_shared(shared)
    }

    unsafe fn flush_icache(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).flush_icache(addr, len) }
    }

    unsafe fn write(&self, addr: usize, bytes: &[u8]) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).write(addr, bytes) }
    }

    unsafe fn store(&self, addr: usize, word: Word) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).store(addr, word) }
    }

    unsafe fn fill(&self, addr: usize, len: usize, pattern: &[u8]) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).fill(addr, len, pattern) }
    }

    unsafe fn read(&self, addr: usize, buf: &mut [u8]) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).read(addr, buf) }
    }

    fn sync_cores(&self) -> Result<()> {
        (**self).sync_cores()
    }

    unsafe fn call(&self, entry: usize) -> Result<u32> {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).call(entry) }
    }
}

#[cfg(test)]
mod tests {
    use super::fill_pattern;

    #[test]
    fn patterns_repeat_and_partial_repetitions_are_zeroed() {
        for len in [0, 1, 3, 4, 5, 8, 13, 64, 1000, 4099] {
            let mut buf = vec![0xAA; len];
            fill_pattern(&mut buf, &[1, 2, 3, 4]);
            let expected: Vec<u8> = (0..len)
                .map(|i| {
                    if i < len / 4 * 4 {
                        (i % 4) as u8 + 1
                    } else {
                        0
                    }
                })
                .collect();
            assert_eq!(buf, expected, "len {len}");
            fill_pattern(&mut buf, &[0xCC]);
            assert!(buf.iter().all(|&b| b == 0xCC));
            fill_pattern(&mut buf, &[]);
            assert!(buf.iter().all(|&b| b == 0));
        }
    }
}
