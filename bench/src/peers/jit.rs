//! jit-allocator (the Rust port of asmjit's `JitAllocator`) with its default options: dual
//! mapping, trap fill of unused memory, one empty block kept. Its `alloc` and `release`
//! take `&mut self`: a JIT whose compiler thread and main thread both allocate or free
//! shares it behind a lock, which [`JitAllocLocked`] adds (codeheap's `Heap` is `Sync` and
//! pays for its own lock on every call).

use std::sync::Mutex;

use jit_allocator::{JitAllocator, JitAllocatorOptions, flush_instruction_cache};

use super::Peer;

/// A jit-allocator block: its executable and writable addresses and the size asked for.
#[derive(Debug)]
pub struct JitBlock {
    rx: *const u8,
    rw: *mut u8,
    size: usize,
}

/// A `JitAllocator` with default options.
pub struct JitAlloc {
    allocator: Box<JitAllocator>,
}

impl core::fmt::Debug for JitAlloc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("JitAlloc")
    }
}

impl JitAlloc {
    /// An allocator with jit-allocator's defaults.
    pub fn new() -> JitAlloc {
        JitAlloc {
            allocator: JitAllocator::new(JitAllocatorOptions::default()),
        }
    }
}

impl Default for JitAlloc {
    fn default() -> Self {
        JitAlloc::new()
    }
}

fn alloc_in(allocator: &mut JitAllocator, size: usize) -> JitBlock {
    let (rx, rw) = allocator.alloc(size).expect("jit-allocator alloc");
    JitBlock { rx, rw, size }
}

fn emit_into(block: &mut JitBlock, code: &[u8]) -> usize {
    assert!(code.len() <= block.size);
    // SAFETY: `rw` is the writable view of a live block of at least `size` bytes, which no
    // other thread writes.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), block.rw, code.len()) };
    flush_instruction_cache(block.rx, code.len());
    block.rx as usize
}

fn free_in(allocator: &mut JitAllocator, block: JitBlock) {
    // SAFETY: `rx` came from this allocator's `alloc` and is released once (the block is
    // consumed).
    unsafe { allocator.release(block.rx) }.expect("jit-allocator release");
}

impl Peer for JitAlloc {
    type Block = JitBlock;

    fn alloc(&mut self, size: usize) -> JitBlock {
        alloc_in(&mut self.allocator, size)
    }

    fn emit(&mut self, block: &mut JitBlock, code: &[u8]) -> usize {
        emit_into(block, code)
    }

    fn free(&mut self, block: JitBlock) {
        free_in(&mut self.allocator, block);
    }

    fn span(&self, block: &JitBlock) -> (usize, usize) {
        (block.rx as usize, block.size)
    }
}

/// A `JitAllocator` with default options behind a `Mutex`, as threads would share it.
pub struct JitAllocLocked {
    allocator: Mutex<Box<JitAllocator>>,
}

impl core::fmt::Debug for JitAllocLocked {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("JitAllocLocked")
    }
}

impl JitAllocLocked {
    /// An allocator with jit-allocator's defaults, locked on every call.
    pub fn new() -> JitAllocLocked {
        JitAllocLocked {
            allocator: Mutex::new(JitAllocator::new(JitAllocatorOptions::default())),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Box<JitAllocator>> {
        self.allocator.lock().expect("no panic while locked")
    }
}

impl Default for JitAllocLocked {
    fn default() -> Self {
        JitAllocLocked::new()
    }
}

impl Peer for JitAllocLocked {
    type Block = JitBlock;

    fn alloc(&mut self, size: usize) -> JitBlock {
        alloc_in(&mut self.locked(), size)
    }

    fn emit(&mut self, block: &mut JitBlock, code: &[u8]) -> usize {
        emit_into(block, code)
    }

    fn free(&mut self, block: JitBlock) {
        free_in(&mut self.locked(), block);
    }

    fn span(&self, block: &JitBlock) -> (usize, usize) {
        (block.rx as usize, block.size)
    }
}
