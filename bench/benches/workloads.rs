//! Criterion benchmarks of W1 (alloc + free churn) and W2 (emit, call, free) over every row,
//! with the mixed sizes and across fixed sizes. `cargo bench -p codeheap-bench`; the HTML
//! reports land in `target/criterion/`.
//!
//! Each benchmark keeps its workload's state (1,000 live blocks; `w1_mixed_10k`: 10,000,
//! codeheap's rows only) across iterations and times whole batches (`iter_custom`), so
//! what is measured is the steady state of the churn, with no dynamic dispatch inside the
//! timed loop.

mod common;

use codeheap::WxStrategy;
use codeheap_bench::Row;
use codeheap_bench::sizes::Sizes;
use codeheap_bench::workload::{EMIT_BYTES, LIVE, MakeStepper, Workload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 6] = [64, 256, 1024, 4096, 16_384, 65_536];

fn bench(c: &mut Criterion, group: &str, workload: Workload, rows: &[Row], parameter: String) {
    bench_live(c, group, MakeStepper::new(workload), rows, parameter);
}

fn bench_live(c: &mut Criterion, group: &str, make: MakeStepper, rows: &[Row], parameter: String) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(1));
    for row in rows {
        let mut stepper = row.visit(make).expect("available");
        group.bench_function(BenchmarkId::new(row.key(), &parameter), |b| {
            b.iter_custom(|iters| stepper.run(iters));
        });
    }
    group.finish();
}

fn mixed(c: &mut Criterion) {
    let rows = Row::available();
    bench(c, "w1_mixed", Workload::W1(Sizes::Mix), &rows, "mix".into());
    bench(
        c,
        "w2_emit",
        Workload::W2(EMIT_BYTES),
        &rows,
        EMIT_BYTES.to_string(),
    );
    // Ten times the live blocks: page churn grows with the heap (the page allocator's
    // choice of what to decommit over its cap shows here, not at 1,000).
    let live = 10 * LIVE;
    let make = MakeStepper {
        workload: Workload::W1(Sizes::Mix),
        live,
    };
    let codeheap = [Row::Codeheap(WxStrategy::DualMap), Row::CodeheapChunks];
    bench_live(c, "w1_mixed_10k", make, &codeheap, live.to_string());
}

fn across_sizes(c: &mut Criterion) {
    let rows: Vec<Row> = Row::available()
        .into_iter()
        .filter(|row| !matches!(row, Row::Region | Row::Dynasmrt))
        .collect();
    for size in SIZES {
        bench(
            c,
            "w1_size",
            Workload::W1(Sizes::Fixed(size)),
            &rows,
            size.to_string(),
        );
        bench(c, "w2_size", Workload::W2(size), &rows, size.to_string());
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = mixed, across_sizes
}
criterion_main!(benches);
