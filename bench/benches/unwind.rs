//! Criterion benchmark of codeheap alone: churn of blocks that carry unwind entries (as a
//! JIT that registers every function with the unwinder makes), against the same churn of
//! plain blocks, at two heap sizes. `cargo bench -p codeheap-bench --bench unwind`.
//!
//! What it watches: the cost of finding a page whose segment still has secondary room
//! must not grow with the number of segments whose room is gone.

mod common;

use std::time::{Duration, Instant};

use codeheap::{Block, FrameDescription, Heap, WxStrategy};
use codeheap_bench::sizes::Rng;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Live blocks of 64–256 bytes (small functions, most of a JIT's), churned: each step
/// frees a random one and allocates another, with an unwind entry or without.
struct Churn {
    heap: Heap<codeheap::NativeOs>,
    frame: Option<FrameDescription>,
    live: Vec<Block>,
    rng: Rng,
}

impl Churn {
    fn new(live: usize, with_entries: bool) -> Churn {
        let heap = Heap::with_strategy(WxStrategy::DualMap).expect("dual mapping runs here");
        let frame = with_entries.then(|| FrameDescription::standard(heap.arch()));
        let mut churn = Churn {
            heap,
            frame,
            live: Vec::with_capacity(live),
            rng: Rng::new(0x5eed),
        };
        for _ in 0..live {
            let block = churn.alloc();
            churn.live.push(block);
        }
        churn
    }

    fn alloc(&mut self) -> Block {
        let size = self.rng.between(64, 256);
        match &self.frame {
            Some(frame) => self.heap.alloc_with_unwind(size, frame.clone()),
            None => self.heap.alloc(size),
        }
        .expect("the heap has room")
    }

    fn run(&mut self, steps: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..steps {
            let i = self.rng.below(self.live.len());
            let block = self.alloc();
            let old = core::mem::replace(&mut self.live[i], block);
            self.heap.free(old).expect("a live block");
        }
        start.elapsed()
    }
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("unwind_churn");
    group.throughput(Throughput::Elements(1));
    for live in [2_000, 20_000] {
        for (name, with_entries) in [("plain", false), ("with-entries", true)] {
            let mut churn = Churn::new(live, with_entries);
            group.bench_function(BenchmarkId::new(name, live), |b| {
                b.iter_custom(|iters| churn.run(iters));
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = churn
}
criterion_main!(benches);
