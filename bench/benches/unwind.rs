//! Criterion benchmark of codeheap alone: churn of blocks that carry unwind entries (as a
//! JIT that registers every function with the unwinder makes), against the same churn of
//! plain blocks, at two heap sizes. `cargo bench -p codeheap-bench --bench unwind`.
//!
//! What it watches: the cost of finding a page whose segment still has secondary room
//! must not grow with the number of segments whose room is gone.

mod common;

use std::time::Duration;

use codeheap::{Block, FrameDescription, Heap, WxStrategy};
use codeheap_bench::churn::RandomChurn;
use codeheap_bench::sizes::Rng;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Live blocks of 64–256 bytes (small functions, most of a JIT's), churned: each step
/// frees a random one and allocates another, with an unwind entry or without.
struct Churn {
    heap: Heap<codeheap::NativeOs>,
    frame: Option<FrameDescription>,
    blocks: RandomChurn<Block>,
}

impl Churn {
    fn new(live: usize, with_entries: bool) -> Churn {
        let heap = Heap::with_strategy(WxStrategy::DualMap).expect("dual mapping runs here");
        let frame = with_entries.then(|| FrameDescription::standard(heap.arch()));
        let blocks = RandomChurn::new(live, |rng| alloc(&heap, frame.as_ref(), rng));
        Churn {
            heap,
            frame,
            blocks,
        }
    }

    fn run(&mut self, steps: u64) -> Duration {
        let Churn {
            heap,
            frame,
            blocks,
        } = self;
        blocks.run(
            steps,
            |rng| alloc(heap, frame.as_ref(), rng),
            |block| heap.free(block).expect("a live block"),
        )
    }
}

fn alloc(
    heap: &Heap<codeheap::NativeOs>,
    frame: Option<&FrameDescription>,
    rng: &mut Rng,
) -> Block {
    let size = rng.between(64, 256);
    match frame {
        Some(frame) => heap.alloc_with_unwind(size, frame.clone()),
        None => heap.alloc(size),
    }
    .expect("the heap has room")
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
