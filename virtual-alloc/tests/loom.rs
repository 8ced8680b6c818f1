//! Loom models of the OS layer: the region registry under concurrent register, unregister
//! and lookup; `VirtualAlloc` releasing and decommitting a region while another thread is
//! still making it; and per-thread write modes on the simulated Apple OS. Every lock is a
//! loom lock through the `sync` shim, so loom explores every interleaving of them.
//!
//! Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! codeheap-virtual-alloc --test loom --release`; see `docs/verification.md`.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};

use codeheap_virtual_alloc::sim::{FaultKind, SimOs};
use codeheap_virtual_alloc::{
    Error, Protection, RegionRegistry, RegionSpan, ThreadMode, VirtualAlloc, WriteScope,
    WxStrategy, current_mode, enter_permanent_write_mode,
};
use loom::sync::Arc;
use loom::thread;

/// Explores `model` exhaustively and returns how many executions that took.
fn explore(model: impl Fn() + Send + Sync + 'static) -> usize {
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&executions);
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.check(move || {
        seen.fetch_add(1, Ordering::Relaxed);
        model();
    });
    let executions = executions.load(Ordering::Relaxed);
    println!("{executions} interleavings");
    assert!(executions > 1, "loom explored interleavings");
    executions
}

const A: RegionSpan = RegionSpan {
    base: 0x1000,
    size: 0x1000,
};
/// Overlaps the second half of `A`.
const B: RegionSpan = RegionSpan {
    base: 0x1800,
    size: 0x1000,
};

/// What a lookup may answer while `A` (value 1) and `B` (value 2) come and go: nothing, or
/// one of them whole, with its own value.
fn consistent(found: Option<(RegionSpan, u32)>) -> bool {
    matches!(found, None | Some((A, 1)) | Some((B, 2)))
}

/// Two threads register overlapping regions at once: exactly one wins, a reader sees
/// nothing or the winner whole, and the winner is what is left.
#[test]
fn overlapping_registrations_have_one_winner() {
    explore(|| {
        let registry = Arc::new(RegionRegistry::new());
        let spawn = |span: RegionSpan, value: u32| {
            let registry = Arc::clone(&registry);
            thread::spawn(move || registry.register(span.base, span.size, value))
        };
        let (first, second) = (spawn(A, 1), spawn(B, 2));
        let seen = registry.lookup(0x1800);
        assert!(consistent(seen), "{seen:?}");
        let results = [first.join().unwrap(), second.join().unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{results:?}");
        let loser = results.iter().find_map(|r| r.clone().err()).unwrap();
        assert!(matches!(loser, Error::RegionOverlap { .. }), "{loser:?}");
        let winner = if results[0].is_ok() { (A, 1) } else { (B, 2) };
        assert_eq!(registry.lookup(0x1800), Some(winner));
        assert_eq!(registry.len(), 1);
    });
}

/// One thread registers `A` and unregisters it; another registers `B`, which overlaps `A`,
/// retrying while `A` is in the way, then unregisters it; a reader looks up the overlap.
/// Every answer is consistent, each unregister returns its own value, and nothing is left.
#[test]
fn register_unregister_and_lookup_race() {
    explore(|| {
        let registry = Arc::new(RegionRegistry::new());
        let owner_of_a = {
            let registry = Arc::clone(&registry);
            thread::spawn(move || {
                registry.register(A.base, A.size, 1).ok();
                let found = registry.lookup_range(0x1000, 0x800);
                if let Ok(found) = found {
                    assert_eq!(found, (A, 1), "only A holds 0x1000");
                }
                registry.unregister(A.base)
            })
        };
        let owner_of_b = {
            let registry = Arc::clone(&registry);
            thread::spawn(move || {
                let registered = (0..2).any(|_| registry.register(B.base, B.size, 2).is_ok());
                if registered {
                    assert_eq!(registry.lookup(0x2000), Some((B, 2)), "its own region");
                    assert_eq!(registry.unregister(B.base), Some(2));
                }
                registered
            })
        };
        let seen = registry.lookup(0x1900);
        assert!(consistent(seen), "{seen:?}");
        let a = owner_of_a.join().unwrap();
        owner_of_b.join().unwrap();
        // `A` was registered unless `B` was in the way; either way it is gone now.
        assert!(matches!(a, None | Some(1)), "{a:?}");
        assert!(registry.is_empty());
        assert_eq!(registry.lookup(0x1900), None);
    });
}

/// The address the next reservation of `size` will get from a fresh simulated Linux with
/// `DualMap`: the simulator hands addresses out deterministically.
fn next_dual_map_base(size: usize) -> usize {
    let twin = VirtualAlloc::with_strategy(SimOs::linux(), WxStrategy::DualMap).unwrap();
    twin.reserve(size).unwrap().base
}

/// While one thread reserves a dual-mapped region, another decommits and releases it at the
/// address it is about to get (a guess any thread can make: `is_jit_address` tells as soon
/// as the region is registered). Whatever the interleaving, nothing panics and, once the
/// region is released, no mapping and no memfd is left behind.
#[test]
fn release_racing_with_reserve_leaks_nothing() {
    explore(|| {
        let size = 4 * 4096;
        let base = next_dual_map_base(size);
        let os = std::sync::Arc::new(SimOs::linux());
        let vm = Arc::new(
            VirtualAlloc::with_strategy(std::sync::Arc::clone(&os), WxStrategy::DualMap).unwrap(),
        );
        let intruder = {
            let vm = Arc::clone(&vm);
            thread::spawn(move || {
                let _ = vm.decommit(base, 4096);
                vm.release(base).is_ok()
            })
        };
        let info = vm.reserve(size).unwrap();
        assert_eq!(info.base, base, "the simulator is deterministic");
        let released_by_intruder = intruder.join().unwrap();
        if !released_by_intruder {
            vm.release(base).unwrap();
        }
        assert_eq!(vm.stats().regions, 0);
        assert_eq!(vm.stats().reserved_bytes, 0);
        assert_eq!(os.shared_objects(), 0, "the region's memfd was closed");
        assert_eq!(os.mapped_pages(), 0, "both views were unmapped");
    });
}

/// A background compiler in permanent write mode writes MAP_JIT code while another thread
/// runs the code next to it. Each thread's mode is its own: the writer never faults writing,
/// the runner never faults running, and the runner, once it enters a write scope itself, is
/// refused.
#[test]
fn write_mode_is_per_thread_on_map_jit() {
    explore(|| {
        let vm = Arc::new(VirtualAlloc::new(SimOs::apple()));
        assert_eq!(vm.strategy(), WxStrategy::MapJit);
        let page = vm.page_size();
        let region = vm
            .reserve_and_commit(page, Protection::ExecuteRead)
            .unwrap();
        let code = vm.arch().encode_return_u32(7);
        {
            let _scope = WriteScope::enter();
            vm.write(region.base, code.as_bytes()).unwrap();
        }
        vm.flush_instruction_cache(region.base, code.as_bytes().len())
            .unwrap();
        let writer = {
            let vm = Arc::clone(&vm);
            thread::spawn(move || {
                enter_permanent_write_mode();
                let next = region.base + 128;
                vm.write(next, code.as_bytes()).unwrap();
                {
                    let _nested = WriteScope::enter();
                    vm.fill(next + 64, 64, &[0xD4]).unwrap();
                }
                assert_eq!(current_mode(), ThreadMode::Write);
                vm.flush_instruction_cache(next, code.as_bytes().len())
                    .unwrap();
                // SAFETY: the simulator decodes the code; the call is refused anyway.
                let refused = unsafe { vm.call(region.base) };
                assert!(
                    matches!(refused, Err(Error::WrongThreadMode { .. })),
                    "{refused:?}"
                );
            })
        };
        // SAFETY: the simulator decodes the code; it touches no process memory.
        assert_eq!(unsafe { vm.call(region.base) }, Ok(7));
        {
            let _scope = WriteScope::enter();
            // SAFETY: as above; running in write mode faults on the simulated CPU.
            let fault = unsafe { codeheap_virtual_alloc::Os::call(vm.os(), region.base) };
            assert!(
                matches!(fault, Err(Error::Fault(f)) if f.kind == FaultKind::ExecuteInWriteMode),
                "{fault:?}"
            );
        }
        writer.join().unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { vm.call(region.base + 128) }, Ok(7));
    });
}
