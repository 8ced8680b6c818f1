//! Heaps on the simulated OS, and running and reading their blocks.
// Each test binary that includes this file uses part of it.
#![allow(dead_code)]

use codeheap::{Block, Error, Heap, HeapConfig, PageAllocatorConfig, SimOs, WxStrategy};

/// A heap on `os` with segments of 8 pages, so that tests stay quick under miri.
pub fn heap(os: SimOs, strategy: Option<WxStrategy>) -> Heap<SimOs> {
    let defaults = HeapConfig::default();
    let config = HeapConfig {
        strategy,
        pages: PageAllocatorConfig {
            segment_pages: 8,
            ..defaults.pages
        },
        ..defaults
    };
    Heap::with_config(os, config).expect("a simulated heap")
}

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
