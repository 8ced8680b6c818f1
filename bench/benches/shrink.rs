//! Criterion benchmark of codeheap alone: a JIT that assembles in place and does not know
//! a function's length until it has emitted it. Each step emits a function of 64–512 bytes
//! and frees a random live one (1,000 live): into a block of exactly its size (the length
//! known up front: the floor), or into room for the most a function may take, truncated to
//! what was written or kept whole, under either size-class rule.
//! `cargo bench -p codeheap-bench --bench shrink`.
//!
//! What it watches: what truncating costs per function against knowing the length, and
//! (printed once per row, after a warm-up) what it saves: bytes of pages held per byte of
//! live code.

mod common;

use std::time::Duration;

use codeheap::{Block, CodeWriter, Heap, HeapConfig, NativeOs, SizeClasses, WxStrategy};
use codeheap_bench::churn::RandomChurn;
use codeheap_bench::sizes::Rng;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const LIVE: usize = 1_000;

/// How a function of unknown length is emitted.
#[derive(Debug, Clone, Copy)]
struct Emit {
    /// The room asked for; `None`: the function's own length.
    room: Option<usize>,
    /// Whether the block is truncated to the function.
    truncate: bool,
    classes: SizeClasses,
}

impl Emit {
    fn name(self) -> String {
        let classes = match self.classes {
            SizeClasses::PowerOfTwo => "pow2",
            SizeClasses::Chunks => "chunks",
        };
        match (self.room, self.truncate) {
            (None, _) => format!("exact/{classes}"),
            (Some(room), true) => format!("room-{room}-truncated/{classes}"),
            (Some(room), false) => format!("room-{room}-whole/{classes}"),
        }
    }
}

struct Churn {
    heap: Heap<NativeOs>,
    how: Emit,
    /// Live functions and their lengths.
    blocks: RandomChurn<(Block, usize)>,
}

impl Churn {
    fn new(how: Emit) -> Churn {
        let config = HeapConfig {
            size_classes: how.classes,
            ..HeapConfig::with_strategy(WxStrategy::DualMap)
        };
        let heap = Heap::with_config(NativeOs::new(), config).expect("dual mapping runs here");
        let blocks = RandomChurn::new(LIVE, |rng| emit(&heap, how, rng));
        Churn { heap, how, blocks }
    }

    fn run(&mut self, steps: u64) -> Duration {
        let Churn { heap, how, blocks } = self;
        blocks.run(
            steps,
            |rng| emit(heap, *how, rng),
            |(block, _)| heap.free(block).expect("a live block"),
        )
    }

    /// Bytes of the pages the heap holds (its blocks' pages, spares and kept blocks; not
    /// the free pages the page allocator keeps committed, up to 1 MiB, which would swamp a
    /// live set of 0.3 MB) over the bytes of live code.
    fn held_per_code_byte(&self) -> f64 {
        let code: usize = self.blocks.live().iter().map(|&(_, len)| len).sum();
        self.heap.page_allocator().stats().used_bytes as f64 / code as f64
    }
}

/// A function of 64–512 bytes (`mov eax, imm32; ret` and padding), emitted as `how` says,
/// and its length.
fn emit(heap: &Heap<NativeOs>, how: Emit, rng: &mut Rng) -> (Block, usize) {
    let len = rng.between(64, 512);
    let code = heap.arch().encode_return_u32(len as u32);
    let write = |w: &mut CodeWriter<'_, NativeOs>| {
        w.write(0, code.as_bytes())?;
        w.fill(code.as_bytes().len(), len - code.as_bytes().len(), &[0x90])?;
        if how.truncate {
            w.truncate(len)?;
        }
        Ok(())
    };
    let (block, ()) = heap
        .emit(how.room.unwrap_or(len), write)
        .expect("the heap has room");
    (block, len)
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("emit_unknown_length");
    group.throughput(Throughput::Elements(1));
    let rows = [SizeClasses::PowerOfTwo, SizeClasses::Chunks].map(|classes| {
        [
            (None, false),
            (Some(1024), true),
            (Some(4096), true),
            (Some(1024), false),
        ]
        .map(|(room, truncate)| Emit {
            room,
            truncate,
            classes,
        })
    });
    for how in rows.into_iter().flatten() {
        let mut churn = Churn::new(how);
        churn.run(100_000);
        eprintln!(
            "{}: pages held / live code {:.2}",
            how.name(),
            churn.held_per_code_byte()
        );
        group.bench_function(BenchmarkId::from_parameter(how.name()), |b| {
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
