//! Running and reading blocks of a heap on the simulated OS.

use codeheap::{Block, Error, Heap, SimOs};

/// Calls the block on the simulated CPU.
pub fn run(heap: &Heap<SimOs>, block: &Block) -> Result<u32, Error> {
    // SAFETY: the simulator decodes the code; it touches no process memory.
    unsafe { heap.call(block) }
}

/// The `len` bytes at `addr`, read through the OS layer.
pub fn read(heap: &Heap<SimOs>, addr: usize, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    if len > 0 {
        heap.vm().read(addr, &mut bytes).unwrap();
    }
    bytes
}
