//! Criterion benchmark: changing what a live function does (an inline cache's guard, a
//! call relinked), then calling it. A live patch (`Heap::patch`, one aligned store and a
//! flush) under each strategy, against what an engine does without one: a write session on
//! the block (which unpublishes it meanwhile), or a new function emitted and the old one
//! freed; and against dynasmrt's `Assembler::alter`, which makes its whole buffer writable
//! and executable again around the change (no thread can run it meanwhile). Then what
//! synchronising every thread's pipeline costs (`Heap::sync_cores`).
//! `cargo bench -p codeheap-bench --bench patch`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use codeheap::{Arch, Block, Heap, NativeOs, WxStrategy};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use dynasmrt::AssemblyOffset;

/// The instructions that set the return value: x86-64's `mov eax, imm32` immediate (4-byte
/// aligned after three `nop`s), aarch64's `movz` + `movk` pair.
struct ValueBytes {
    offset: usize,
    bytes: [u8; 8],
    len: usize,
}

impl ValueBytes {
    fn new(arch: Arch, value: u32) -> ValueBytes {
        let mut bytes = [0; 8];
        let (offset, len) = match arch {
            Arch::X86_64 => {
                bytes[..4].copy_from_slice(&value.to_le_bytes());
                (4, 4)
            }
            Arch::Aarch64 => {
                let movz: u32 = 0x5280_0000 | ((value & 0xFFFF) << 5);
                let movk: u32 = 0x72A0_0000 | ((value >> 16) << 5);
                bytes[..4].copy_from_slice(&movz.to_le_bytes());
                bytes[4..].copy_from_slice(&movk.to_le_bytes());
                (0, 8)
            }
        };
        ValueBytes { offset, bytes, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A function returning `value` whose value one aligned store changes.
fn function(arch: Arch, value: u32) -> Vec<u8> {
    let patch = ValueBytes::new(arch, value);
    let mut code = vec![0x90; patch.offset];
    code.extend_from_slice(patch.bytes());
    if arch == Arch::X86_64 {
        code[3] = 0xB8;
        code.push(0xC3);
    } else {
        code.extend_from_slice(&0xD65F_03C0u32.to_le_bytes());
    }
    code
}

fn call(heap: &Heap<NativeOs>, block: &Block) -> u32 {
    // SAFETY: the block holds a complete `extern "C" fn() -> u32`, finalized.
    let f: extern "C" fn() -> u32 = unsafe { heap.function(block) }.expect("finalized");
    f()
}

#[derive(Debug, Clone, Copy)]
enum Change {
    /// `Heap::patch`.
    Patch,
    /// A write session rewriting the same bytes.
    Session,
    /// `emit_code` of the changed function, then a free of the old one.
    Reemit,
}

fn relink(c: &mut Criterion) {
    let mut group = c.benchmark_group("change_a_live_function");
    group.throughput(Throughput::Elements(1));
    let rows = [
        (Change::Patch, WxStrategy::DualMap),
        (Change::Patch, WxStrategy::Rwx),
        (Change::Patch, WxStrategy::Protect),
        (Change::Session, WxStrategy::DualMap),
        (Change::Reemit, WxStrategy::DualMap),
    ];
    for (change, strategy) in rows {
        let heap = Heap::with_strategy(strategy).expect("the strategy runs here");
        let arch = heap.arch();
        let mut block = heap.emit_code(&function(arch, 0)).expect("room");
        let mut value = 0u32;
        let name = format!("{change:?}/{strategy}").to_lowercase();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                value = value.wrapping_add(1);
                match change {
                    Change::Patch => {
                        let patch = ValueBytes::new(arch, value);
                        heap.patch(&block, patch.offset, patch.bytes())
                            .expect("a live patch");
                    }
                    Change::Session => {
                        let patch = ValueBytes::new(arch, value);
                        heap.write(&mut block, |w| w.write(patch.offset, patch.bytes()))
                            .expect("a session");
                    }
                    Change::Reemit => {
                        let new = heap.emit_code(&function(arch, value)).expect("room");
                        let old = std::mem::replace(&mut block, new);
                        heap.free(old).expect("a live block");
                    }
                }
                assert_eq!(call(&heap, &block), value);
            });
        });
        heap.free(block).expect("a live block");
    }
    dynasmrt_alter(&mut group);
    group.finish();
}

#[cfg(target_arch = "x86_64")]
type Relocation = dynasmrt::x64::X64Relocation;
#[cfg(target_arch = "aarch64")]
type Relocation = dynasmrt::aarch64::Aarch64Relocation;

/// The same change through dynasmrt: `alter` (two `mprotect`s of the buffer and an icache
/// flush), then the function called through the buffer's read lock.
fn dynasmrt_alter(group: &mut BenchmarkGroup<'_, WallTime>) {
    let arch = Arch::host();
    let mut ops = dynasmrt::Assembler::<Relocation>::new().expect("a buffer");
    ops.extend(function(arch, 0));
    ops.commit().expect("committed");
    let reader = ops.reader();
    let mut value = 0u32;
    group.bench_function(BenchmarkId::from_parameter("alter/dynasmrt"), |b| {
        b.iter(|| {
            value = value.wrapping_add(1);
            let patch = ValueBytes::new(arch, value);
            ops.alter(|m| {
                m.goto(AssemblyOffset(patch.offset));
                m.extend(patch.bytes());
            })
            .expect("altered");
            let buffer = reader.lock();
            // SAFETY: the buffer holds a complete `extern "C" fn() -> u32` at its start,
            // executable while the read lock is held.
            let f: extern "C" fn() -> u32 =
                unsafe { std::mem::transmute(buffer.ptr(AssemblyOffset(0))) };
            assert_eq!(f(), value);
        });
    });
}

/// `Heap::sync_cores` (`membarrier` on Linux) with no other thread of the process running,
/// and with one spinning on another core, which the call must interrupt.
fn sync_cores(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_cores");
    let heap = Heap::with_strategy(WxStrategy::DualMap).expect("dual mapping runs here");
    group.bench_function(BenchmarkId::from_parameter("alone"), |b| {
        b.iter(|| heap.sync_cores().expect("membarrier"));
    });
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        group.bench_function(
            BenchmarkId::from_parameter("beside-a-running-thread"),
            |b| {
                b.iter(|| heap.sync_cores().expect("membarrier"));
            },
        );
        stop.store(true, Ordering::Relaxed);
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = relink, sync_cores
}
criterion_main!(benches);
