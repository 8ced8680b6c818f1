//! codeheap through its public API: `alloc`, `write` (which pads, flushes and finalizes),
//! `emit_code` (a finished buffer allocated, copied and finalized in one call, as W2 and W4
//! have one), `entry_point` and `free`: on the heap's exclusive view ([`Heap::exclusive`]), as the workloads
//! own their allocator (jit-allocator's calls take `&mut self` too), or, for the shared
//! rows, on `&Heap`, through its lock, as threads that share the heap call it.

use codeheap::{Block, Heap, HeapConfig, NativeOs, SizeClasses, WxStrategy};

use super::Peer;

/// A codeheap [`Heap`] with one strategy.
#[derive(Debug)]
pub struct CodeHeap {
    heap: Heap<NativeOs>,
    /// Calls go through `&Heap` and its lock rather than the exclusive view.
    shared: bool,
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
            .map(|heap| CodeHeap {
                heap,
                shared: false,
            })
    }

    /// The same heap called through `&Heap`, taking its lock on every call.
    pub fn shared(self) -> CodeHeap {
        CodeHeap {
            shared: true,
            ..self
        }
    }

    /// The heap, for its stats.
    pub fn heap(&self) -> &Heap<NativeOs> {
        &self.heap
    }
}

impl Peer for CodeHeap {
    type Block = Block;

    fn alloc(&mut self, size: usize) -> Block {
        let block = if self.shared {
            self.heap.alloc(size)
        } else {
            self.heap.exclusive().alloc(size)
        };
        block.expect("codeheap alloc")
    }

    fn emit(&mut self, block: &mut Block, code: &[u8]) -> usize {
        let entry = if self.shared {
            (self.heap.write(block, |writer| writer.write(0, code)))
                .and_then(|()| self.heap.entry_point(block))
        } else {
            let mut heap = self.heap.exclusive();
            (heap.write(block, |writer| writer.write(0, code)))
                .and_then(|()| heap.entry_point(block))
        };
        entry.expect("codeheap write")
    }

    fn alloc_and_emit(&mut self, code: &[u8]) -> (Block, usize) {
        let emitted = if self.shared {
            (self.heap.emit_code(code))
                .and_then(|block| Ok((self.heap.entry_point(&block)?, block)))
        } else {
            let mut heap = self.heap.exclusive();
            (heap.emit_code(code)).and_then(|block| Ok((heap.entry_point(&block)?, block)))
        };
        let (entry, block) = emitted.expect("codeheap emit_code");
        (block, entry)
    }

    fn free(&mut self, block: Block) {
        let freed = if self.shared {
            self.heap.free(block)
        } else {
            self.heap.exclusive().free(block)
        };
        freed.expect("codeheap free");
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
