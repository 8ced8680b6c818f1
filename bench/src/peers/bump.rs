//! The floor: a bump pointer over one RWX mapping. No bookkeeping, no W^X, no system call
//! after the first; free does nothing. When the pointer reaches the end it wraps to the
//! start, so the mapping is a ring: blocks older than a ring's worth of allocations are
//! overwritten (the overlap check shows it with a small ring). The ring is touched when it
//! is made, so the floor pays no page faults: it is the cost of the copy and the call alone.

use super::Peer;

/// Bytes of the ring: large enough that no workload here wraps onto a live block (W1's
/// 1,000 live blocks hold about 2.5 MB; a block would have to outlive some 26,000 steps),
/// small enough to touch up front.
pub const RING_BYTES: usize = 64 << 20;

/// Block alignment: 16 bytes, as compilers align functions.
const ALIGN: usize = 16;

/// A bump allocator over one RWX mapping.
#[derive(Debug)]
pub struct Bump {
    base: usize,
    len: usize,
    next: usize,
    high_water: usize,
}

/// A bump block.
#[derive(Debug, Clone, Copy)]
pub struct BumpBlock {
    addr: usize,
    size: usize,
}

impl Bump {
    /// A ring of 64 MiB (`RING_BYTES`), mapped RWX.
    pub fn new() -> Bump {
        Bump::with_len(RING_BYTES)
    }

    /// A ring of `len` bytes, filled with `int3`.
    pub fn with_len(len: usize) -> Bump {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "RWX mmap refused");
        // SAFETY: the whole mapping was just made readable and writable, and nothing else
        // refers to it yet.
        let bytes = unsafe { core::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
        codeheap::Arch::host().fill_traps(bytes);
        Bump {
            base: base as usize,
            len,
            next: 0,
            high_water: 0,
        }
    }

    /// The furthest the pointer has gone: bytes handed out before any wrap.
    pub fn high_water(&self) -> usize {
        self.high_water
    }
}

impl Default for Bump {
    fn default() -> Self {
        Bump::new()
    }
}

impl Drop for Bump {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `with_len`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

impl Peer for Bump {
    type Block = BumpBlock;

    fn alloc(&mut self, size: usize) -> BumpBlock {
        assert!(size <= self.len);
        if self.next + size > self.len {
            self.next = 0;
        }
        let addr = self.base + self.next;
        self.next = (self.next + size).next_multiple_of(ALIGN);
        self.high_water = self.high_water.max(self.next);
        BumpBlock { addr, size }
    }

    fn emit(&mut self, block: &mut BumpBlock, code: &[u8]) -> usize {
        assert!(code.len() <= block.size);
        // SAFETY: inside the RWX ring; the block's bytes belong to it.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), block.addr as *mut u8, code.len()) };
        block.addr
    }

    fn free(&mut self, _block: BumpBlock) {}

    fn span(&self, block: &BumpBlock) -> (usize, usize) {
        (block.addr, block.size)
    }
}
