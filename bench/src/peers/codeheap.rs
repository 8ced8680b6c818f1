//! codeheap through its public API: `alloc`, `write` (which pads, flushes and finalizes),
//! `emit_code` (a finished buffer allocated, copied and finalized in one call, as W2 and W4
//! have one), `entry_point` and `free`.

use codeheap::{Block, Heap, HeapConfig, NativeOs, SizeClasses, WxStrategy};

use super::Peer;

/// A codeheap [`Heap`] with one strategy.
#[derive(Debug)]
pub struct CodeHeap {
    heap: Heap<NativeOs>,
}

impl CodeHeap {
    /// A heap with `strategy`, or `None` if this machine cannot provide it.
    pub fn new(strategy: WxStrategy) -> Option<CodeHeap> {
        CodeHeap::with_classes(strategy, SizeClasses::PowerOfTwo)
    }

    /// A heap with `strategy` that rounds small requests as `classes` says.
    pub fn with_classes(strategy: WxStrategy, classes: SizeClasses) -> Option<CodeHeap> {
        CodeHeap::with_config(HeapConfig {
            size_classes: classes,
            ..HeapConfig::with_strategy(strategy)
        })
    }

    /// A heap made with `config`, or `None` if this machine cannot provide it.
    pub fn with_config(config: HeapConfig) -> Option<CodeHeap> {
        Heap::with_config(NativeOs::new(), config)
            .ok()
            .map(|heap| CodeHeap { heap })
    }

    /// The heap, for its stats.
    pub fn heap(&self) -> &Heap<NativeOs> {
        &self.heap
    }
}

impl Peer for CodeHeap {
    type Block = Block;

    fn alloc(&mut self, size: usize) -> Block {
        self.heap.alloc(size).expect("codeheap alloc")
    }

    fn emit(&mut self, block: &mut Block, code: &[u8]) -> usize {
        self.heap
            .write(block, |writer| writer.write(0, code))
            .expect("codeheap write");
        self.heap.entry_point(block).expect("codeheap entry point")
    }

    fn alloc_and_emit(&mut self, code: &[u8]) -> (Block, usize) {
        let block = self.heap.emit_code(code).expect("codeheap emit_code");
        let entry = self.heap.entry_point(&block).expect("codeheap entry point");
        (block, entry)
    }

    fn free(&mut self, block: Block) {
        self.heap.free(block).expect("codeheap free");
    }

    fn span(&self, block: &Block) -> (usize, usize) {
        (block.addr(), block.size())
    }

    fn committed_bytes(&self) -> Option<usize> {
        Some(self.heap.stats().committed_bytes)
    }

    fn allocated_bytes(&self) -> Option<usize> {
        Some(self.heap.stats().allocated_bytes)
    }

    fn trim(&mut self) -> bool {
        self.heap.trim().expect("codeheap trim");
        true
    }
}
