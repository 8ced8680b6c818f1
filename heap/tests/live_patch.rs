//! Live patching of real machine code: one thread keeps calling a function through its
//! pointer while another patches it (`Heap::patch`) again and again. Every call returns a
//! value some patch wrote (never a mix of two), and each patch reaches the running thread.
//! Then tiering up: the calls go through a stub whose direct jump is relinked to each new
//! tier the other thread compiles into the heap's code range.
//! Natively on x86-64 and under qemu on aarch64, under every strategy that leaves code
//! executable while it is written (`Protect` does not: its writer faults the executor).
#![cfg(all(any(target_os = "linux", target_os = "macos"), not(miri)))]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use codeheap::{Arch, Block, CodeRangeConfig, Heap, HeapConfig, NativeOs, WxStrategy};

/// Patches per strategy; each waits until the running thread has returned its value.
const PATCHES: u32 = 300;

/// How long a patch may take to reach the running thread before the test fails (qemu's
/// threads can be slow to be scheduled).
const DEADLINE: Duration = Duration::from_secs(20);

/// The strategies under which code runs while it is written, where the OS has them.
fn live_strategies() -> Vec<WxStrategy> {
    [WxStrategy::MapJit, WxStrategy::DualMap, WxStrategy::Rwx]
        .into_iter()
        .filter(|&s| Heap::with_strategy(s).is_ok())
        .collect()
}

/// What the function returns and how a patch changes it, per architecture.
trait Patchable {
    /// The function, returning `value(0)`.
    fn code(&self) -> Vec<u8>;
    /// The value after patch `k`.
    fn value(&self, k: u32) -> u32;
    /// Whether a call's result is one some patch wrote.
    fn is_whole(&self, result: u32) -> bool;
    /// Patch `k`: its offset and bytes (one aligned store).
    fn patch(&self, k: u32) -> (usize, Vec<u8>);
}

/// x86-64: `nop; nop; nop; mov eax, imm32; ret`, the 4-byte aligned immediate patched with
/// values whose four bytes are equal, so a store that tore would return unequal ones.
struct X86Immediate;

impl Patchable for X86Immediate {
    fn code(&self) -> Vec<u8> {
        let mut code = vec![0x90, 0x90, 0x90, 0xB8];
        code.extend_from_slice(&self.value(0).to_le_bytes());
        code.push(0xC3);
        code
    }

    fn value(&self, k: u32) -> u32 {
        (k % 255 + 1) * 0x0101_0101
    }

    fn is_whole(&self, result: u32) -> bool {
        let [a, b, c, d] = result.to_le_bytes();
        a != 0 && a == b && b == c && c == d
    }

    fn patch(&self, k: u32) -> (usize, Vec<u8>) {
        (4, self.value(k).to_le_bytes().to_vec())
    }
}

/// aarch64: a `B` at the entry to one of `STUBS` stubs `movz w0, #i; ret`, retargeted by each
/// patch (a branch replaced by a branch: what the architecture lets a running thread see).
struct Aarch64Branch;

const STUBS: u32 = 16;

impl Aarch64Branch {
    /// `B` from offset 0 to stub `i` (1-based) at offset 4 + 8 (i - 1).
    fn branch_to(i: u32) -> u32 {
        0x1400_0000 | (1 + 2 * (i - 1))
    }
}

impl Patchable for Aarch64Branch {
    fn code(&self) -> Vec<u8> {
        let mut words = vec![Self::branch_to(self.value(0))];
        for i in 1..=STUBS {
            words.push(0x5280_0000 | (i << 5)); // movz w0, #i
            words.push(0xD65F_03C0); // ret
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn value(&self, k: u32) -> u32 {
        k % STUBS + 1
    }

    fn is_whole(&self, result: u32) -> bool {
        (1..=STUBS).contains(&result)
    }

    fn patch(&self, k: u32) -> (usize, Vec<u8>) {
        (0, Self::branch_to(self.value(k)).to_le_bytes().to_vec())
    }
}

fn patchable(arch: Arch) -> Box<dyn Patchable + Send + Sync> {
    match arch {
        Arch::X86_64 => Box::new(X86Immediate),
        Arch::Aarch64 => Box::new(Aarch64Branch),
    }
}

/// What the running thread saw.
#[derive(Default)]
struct Seen {
    latest: AtomicU32,
    calls: AtomicU64,
    /// Calls that returned a value no patch made (torn, or from code not yet linked).
    wrong: AtomicU64,
}

fn run_until(
    stop: &AtomicBool,
    function: extern "C" fn() -> u32,
    shape: &dyn Patchable,
    seen: &Seen,
) {
    while !stop.load(Ordering::Relaxed) {
        let result = function();
        if !shape.is_whole(result) {
            seen.wrong.fetch_add(1, Ordering::Relaxed);
        }
        seen.latest.store(result, Ordering::Release);
        seen.calls.fetch_add(1, Ordering::Relaxed);
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn patch_while_running(strategy: WxStrategy) {
    let heap = Heap::with_strategy(strategy).unwrap();
    let shape = patchable(heap.arch());
    let block: Block = heap.emit_code(&shape.code()).unwrap();
    // SAFETY: the block holds a complete `extern "C" fn() -> u32`, finalized; it is freed
    // only after the thread calling it has been joined.
    let function: extern "C" fn() -> u32 = unsafe { heap.function(&block) }.unwrap();
    assert_eq!(function(), shape.value(0));
    let stop = AtomicBool::new(false);
    let seen = Seen::default();
    std::thread::scope(|scope| {
        // Set however this closure ends, so that a failed assertion here ends the test
        // instead of waiting forever for the running thread to be joined.
        let _stop = StopOnDrop(&stop);
        let runner = scope.spawn(|| run_until(&stop, function, &*shape, &seen));
        for k in 1..=PATCHES {
            let (offset, bytes) = shape.patch(k);
            heap.patch(&block, offset, &bytes).unwrap();
            let started = Instant::now();
            while seen.latest.load(Ordering::Acquire) != shape.value(k) {
                assert!(
                    started.elapsed() < DEADLINE && !runner.is_finished(),
                    "{strategy}: patch {k} did not reach the running thread (it last returned {:#x})",
                    seen.latest.load(Ordering::Relaxed)
                );
                std::thread::yield_now();
            }
        }
    });
    let calls = seen.calls.load(Ordering::Relaxed);
    assert_eq!(
        seen.wrong.load(Ordering::Relaxed),
        0,
        "{strategy}: a call ran a torn patch"
    );
    assert!(calls >= u64::from(PATCHES), "{strategy}: {calls} calls");
    assert_eq!(heap.stats().patches, u64::from(PATCHES));
    assert_eq!(
        heap.entry_point(&block),
        Ok(function as usize),
        "never unpublished"
    );
    heap.free(block).unwrap();
}

#[test]
fn a_function_patched_while_another_thread_runs_it_returns_whole_values_and_each_patch_arrives() {
    let strategies = live_strategies();
    assert!(
        strategies.contains(&WxStrategy::Rwx),
        "Rwx works everywhere: {strategies:?}"
    );
    for strategy in strategies {
        patch_while_running(strategy);
    }
}

/// Tiers compiled and linked in by the tier-up test.
const TIERS: u32 = 60;

/// A jump from `from` to `to`, and where in the stub it goes: x86-64 `jmp rel32` at offset
/// 3 (its displacement 4-byte aligned at 4), aarch64 `B` at 0.
fn jump(arch: Arch, from: usize, to: usize) -> (usize, Vec<u8>) {
    match arch {
        Arch::X86_64 => {
            let rel = to.wrapping_sub(from + 8) as isize;
            let rel = i32::try_from(rel).expect("within rel32 reach: the code range");
            (4, rel.to_le_bytes().to_vec())
        }
        Arch::Aarch64 => {
            let words = (to.wrapping_sub(from) as isize) / 4;
            assert!(
                words.unsigned_abs() < 1 << 25,
                "within B's reach: the code range"
            );
            let b = 0x1400_0000 | (words as u32 & 0x03FF_FFFF);
            (0, b.to_le_bytes().to_vec())
        }
    }
}

/// The stub every call goes through, jumping to `first`.
fn entry_stub(arch: Arch, at: usize, first: usize) -> Vec<u8> {
    let (offset, displacement) = jump(arch, at, first);
    let mut code = match arch {
        Arch::X86_64 => vec![0x90, 0x90, 0x90, 0xE9],
        Arch::Aarch64 => Vec::new(),
    };
    assert_eq!(code.len(), offset);
    code.extend_from_slice(&displacement);
    code
}

/// Tiering up: a thread keeps calling a function through its entry stub while another
/// compiles tier after tier into the heap (a code range, so every tier is within a direct
/// jump's reach of the stub) and relinks the stub's jump to each with a live patch. Each
/// relink reaches the calling thread; every call returns a tier compiled so far.
fn tier_up(strategy: WxStrategy) {
    let config = HeapConfig {
        code_range: Some(CodeRangeConfig::new(32 << 20)),
        ..HeapConfig::with_strategy(strategy)
    };
    let heap = Heap::with_config(NativeOs::new(), config).unwrap();
    let arch = heap.arch();
    let emit_tier = |k: u32| {
        heap.emit_code(arch.encode_return_u32(k).as_bytes())
            .unwrap()
    };
    let mut tiers = vec![emit_tier(1)];
    // The stub's address is known only once it is placed: emitted with a jump to itself
    // (never run), then linked.
    let mut stub = heap.alloc(entry_stub(arch, 0, 0).len()).unwrap();
    heap.write(&mut stub, |w| {
        let code = entry_stub(arch, w.addr(), tiers[0].addr());
        w.write(0, &code)
    })
    .unwrap();
    // SAFETY: the stub jumps to a complete `extern "C" fn() -> u32`; every tier it ever
    // jumps to is freed only after the calling thread has been joined.
    let function: extern "C" fn() -> u32 = unsafe { heap.function(&stub) }.unwrap();
    assert_eq!(function(), 1);
    let stop = AtomicBool::new(false);
    let compiled = AtomicU32::new(1);
    let seen = Seen::default();
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let runner = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let tier = function();
                if tier == 0 || tier > compiled.load(Ordering::Acquire) {
                    seen.wrong.fetch_add(1, Ordering::Relaxed);
                }
                seen.latest.store(tier, Ordering::Release);
                seen.calls.fetch_add(1, Ordering::Relaxed);
            }
        });
        for k in 2..=TIERS {
            let tier = emit_tier(k);
            // What aarch64 asks before another thread runs the new tier (its memory may
            // have held code that thread ran before): then the branch may lead there.
            heap.sync_cores().unwrap();
            compiled.store(k, Ordering::Release);
            let (offset, displacement) = jump(arch, stub.addr(), tier.addr());
            heap.patch(&stub, offset, &displacement).unwrap();
            tiers.push(tier);
            let started = Instant::now();
            while seen.latest.load(Ordering::Acquire) != k {
                assert!(
                    started.elapsed() < DEADLINE && !runner.is_finished(),
                    "{strategy}: tier {k} was not reached (the last call returned {})",
                    seen.latest.load(Ordering::Relaxed)
                );
                std::thread::yield_now();
            }
        }
    });
    assert_eq!(
        seen.wrong.load(Ordering::Relaxed),
        0,
        "{strategy}: a call returned a tier not compiled"
    );
    assert_eq!(function(), TIERS);
    assert_eq!(heap.stats().patches, u64::from(TIERS - 1));
    assert_eq!(heap.vm().stats().core_syncs, u64::from(TIERS - 1));
    for tier in tiers {
        heap.free(tier).unwrap();
    }
    heap.free(stub).unwrap();
}

#[test]
fn a_stub_relinked_to_each_new_tier_while_another_thread_calls_through_it() {
    for strategy in live_strategies() {
        tier_up(strategy);
    }
}
