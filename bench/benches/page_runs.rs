//! Criterion benchmark of the page allocator alone: runs of 1–16 pages (large blocks, as
//! the heap asks for them) churned over a growing number of segments.
//! `cargo bench -p codeheap-bench --bench page_runs`.
//!
//! What it watches: finding a run for a request must not grow with the number of segments.
//! Beyond the free pages it keeps committed (`max_free_pages`, the heap's default here) the
//! allocator decommits what is released, so most requests are served from runs that hold
//! decommitted pages, in whichever segment has one that fits.

mod common;

use std::time::Duration;

use codeheap::pages::{PageAllocator, PageRun};
use codeheap::vm::VirtualAlloc;
use codeheap::{HeapConfig, NativeOs, WxStrategy};
use codeheap_bench::churn::RandomChurn;
use codeheap_bench::sizes::Rng;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Live runs, churned: each step releases a random one and allocates another.
struct Churn {
    pages: PageAllocator<NativeOs>,
    runs: RandomChurn<PageRun>,
}

impl Churn {
    fn new(live: usize) -> Churn {
        let vm = VirtualAlloc::with_strategy(NativeOs::new(), WxStrategy::DualMap)
            .expect("dual mapping runs here");
        let pages = PageAllocator::new(vm, HeapConfig::default().pages).expect("a page allocator");
        let runs = RandomChurn::new(live, |rng| alloc(&pages, rng));
        Churn { pages, runs }
    }

    fn run(&mut self, steps: u64) -> Duration {
        let Churn { pages, runs } = self;
        runs.run(
            steps,
            |rng| alloc(pages, rng),
            |run| {
                pages
                    .release_pages(run.addr, run.pages)
                    .expect("a live run")
            },
        )
    }
}

fn alloc(pages: &PageAllocator<NativeOs>, rng: &mut Rng) -> PageRun {
    pages
        .alloc_pages(rng.between(1, 16))
        .expect("the allocator has room")
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
