//! Criterion benchmark of the page allocator alone: runs of 1–16 pages (large blocks, as
//! the heap asks for them) churned over a growing number of segments.
//! `cargo bench -p codeheap-bench --bench page_runs`.
//!
//! What it watches: finding a run for a request must not grow with the number of segments.
//! Beyond the free pages it keeps committed (`max_free_pages`, the heap's default here) the
//! allocator decommits what is released, so most requests are served from runs that hold
//! decommitted pages, in whichever segment has one that fits.

mod common;

use std::time::{Duration, Instant};

use codeheap::pages::{PageAllocator, PageRun};
use codeheap::vm::VirtualAlloc;
use codeheap::{HeapConfig, NativeOs, WxStrategy};
use codeheap_bench::sizes::Rng;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Live runs, churned: each step releases a random one and allocates another.
struct Churn {
    pages: PageAllocator<NativeOs>,
    live: Vec<PageRun>,
    rng: Rng,
}

impl Churn {
    fn new(live: usize) -> Churn {
        let vm = VirtualAlloc::with_strategy(NativeOs::new(), WxStrategy::DualMap)
            .expect("dual mapping runs here");
        let pages = PageAllocator::new(vm, HeapConfig::default().pages).expect("a page allocator");
        let mut churn = Churn {
            pages,
            live: Vec::with_capacity(live),
            rng: Rng::new(0x5eed),
        };
        for _ in 0..live {
            let run = churn.alloc();
            churn.live.push(run);
        }
        churn
    }

    fn alloc(&mut self) -> PageRun {
        let pages = self.rng.between(1, 16);
        self.pages
            .alloc_pages(pages)
            .expect("the allocator has room")
    }

    fn run(&mut self, steps: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..steps {
            let i = self.rng.below(self.live.len());
            let run = self.alloc();
            let old = core::mem::replace(&mut self.live[i], run);
            self.pages
                .release_pages(old.addr, old.pages)
                .expect("a live run");
        }
        start.elapsed()
    }
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("page_runs");
    group.throughput(Throughput::Elements(1));
    for live in [100, 1_000, 4_000] {
        let mut churn = Churn::new(live);
        group.bench_function(BenchmarkId::new("churn", live), |b| {
            b.iter_custom(|iters| churn.run(iters));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = churn
}
criterion_main!(benches);
