//! A heap with a code range: every block lies in the one span reserved up front, so blocks
//! in different segments call each other with direct calls (`call rel32`, `bl`; run
//! natively, as the simulated CPU decodes no calls); a full range fails an allocation with
//! a typed error and changes nothing.

use codeheap::vm::Error as VmError;
use codeheap::{Block, CodeRangeConfig, Error, Heap, HeapConfig, Os, SimOs, WxStrategy};

/// `callee_0() + callee_1()`, each reached with a direct call from `at`.
#[cfg(all(target_os = "linux", not(miri)))]
fn calls_two(arch: codeheap::Arch, at: usize, callees: [usize; 2]) -> Vec<u8> {
    match arch {
        codeheap::Arch::X86_64 => {
            // call rel32; mov ecx, eax; call rel32; add eax, ecx; ret
            let rel = |from: usize, to: usize| {
                i32::try_from(to as i64 - from as i64)
                    .expect("within the reach of rel32")
                    .to_le_bytes()
            };
            let mut code = vec![0xE8];
            code.extend(rel(at + 5, callees[0]));
            code.extend([0x89, 0xC1, 0xE8]);
            code.extend(rel(at + 12, callees[1]));
            code.extend([0x01, 0xC8, 0xC3]);
            code
        }
        codeheap::Arch::Aarch64 => {
            let bl = |from: usize, to: usize| {
                let words = (to as i64 - from as i64) / 4;
                assert!((-(1 << 25)..1 << 25).contains(&words), "within bl's reach");
                0x9400_0000 | (words as u32 & 0x03FF_FFFF)
            };
            [
                0xA9BF_7BFD, // stp x29, x30, [sp, #-16]!
                0x9100_03FD, // mov x29, sp
                bl(at + 8, callees[0]),
                0x2A00_03E9, // mov w9, w0
                bl(at + 16, callees[1]),
                0x0B09_0000, // add w0, w0, w9
                0xA8C1_7BFD, // ldp x29, x30, [sp], #16
                0xD65F_03C0, // ret
            ]
            .into_iter()
            .flat_map(u32::to_le_bytes)
            .collect()
        }
    }
}

fn emit<O: Os>(heap: &Heap<O>, size: usize, value: u32) -> Block {
    let code = heap.arch().encode_return_u32(value);
    let (block, ()) = heap.emit(size, |w| w.write(0, code.as_bytes())).unwrap();
    block
}

/// Blocks in three segments of their own (larger than a segment's code pages), megabytes
/// apart in the range: the middle one calls one before it and one after it directly, and
/// `calls_two`'s sum comes back.
#[cfg(all(target_os = "linux", not(miri)))]
fn direct_calls_between_segments(heap: &Heap<codeheap::NativeOs>) {
    let range = heap.code_range().expect("a code range");
    let large = heap.page_allocator().config().code_pages() * heap.page_size() + 1;
    let fill =
        |count: usize| -> Vec<Block> { (0..count).map(|i| emit(heap, large, i as u32)).collect() };
    let before = emit(heap, large, 40);
    let fillers = fill(24);
    let caller = heap.alloc(large).unwrap();
    let more = fill(24);
    let after = emit(heap, large, 2);
    let region = |block: &Block| heap.vm().region(block.addr()).unwrap().base;
    assert_ne!(region(&before), region(&caller), "different segments");
    assert_ne!(region(&after), region(&caller), "different segments");
    assert!(before.addr() < caller.addr() && caller.addr() < after.addr());
    for block in [&before, &caller, &after]
        .into_iter()
        .chain(&fillers)
        .chain(&more)
    {
        assert!(range.start <= block.addr() && block.addr() + block.capacity() <= range.end);
    }
    let code = calls_two(heap.arch(), caller.addr(), [before.addr(), after.addr()]);
    let mut caller = caller;
    heap.write(&mut caller, |w| w.write(0, &code)).unwrap();
    assert_eq!(native_call(heap, &caller), 42);
    assert_eq!(native_call(heap, &fillers[3]), 3);
}

/// Calls a finalized block through a function pointer.
#[cfg(all(target_os = "linux", not(miri)))]
fn native_call(heap: &Heap<codeheap::NativeOs>, block: &Block) -> u32 {
    // SAFETY: the tests' blocks hold complete `extern "C" fn() -> u32`s, finalized, whose
    // callees (other blocks, or a function of this program) live as long as the heap.
    let function: extern "C" fn() -> u32 = unsafe { heap.function(block) }.unwrap();
    function()
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn blocks_in_different_segments_call_each_other_directly() {
    use codeheap::NativeOs;
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let config = HeapConfig {
            code_range: Some(CodeRangeConfig::new(64 << 20)),
            ..HeapConfig::with_strategy(strategy)
        };
        let heap = Heap::with_config(NativeOs::new(), config).unwrap();
        assert!(heap.code_range().unwrap().len() <= heap.arch().call_reach());
        direct_calls_between_segments(&heap);
    }
}

/// A function of this program that JIT code calls directly.
#[cfg(all(target_os = "linux", not(miri)))]
extern "C" fn helper_in_the_binary() -> u32 {
    21
}

/// Runs in a child process of its own (`--test-threads=1`, nothing else mapping meanwhile),
/// up to five times: where the address space has no room near the program's text the range
/// is refused with `CodeRangeOutOfReach`, which under qemu-user, whose own mappings crowd
/// the guest's text, happened in about one process in three when the test binary's other
/// tests ran beside it, and in about one in twenty alone. A fresh process has a fresh
/// layout. Any other outcome (a wrong result, a panic) fails the test at once, and one
/// child must succeed; natively the first does.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn blocks_call_a_function_of_the_program_directly() {
    use codeheap_test_support::child;
    const TEST: &str = "blocks_call_a_function_of_the_program_directly";
    const NO_ROOM: i32 = 3;
    if child::role().as_deref() == Some("near") {
        match calls_into_the_program() {
            Ok(()) => std::process::exit(0),
            Err(Error::Vm(VmError::CodeRangeOutOfReach { .. })) => std::process::exit(NO_ROOM),
            Err(err) => panic!("{err}"),
        }
    }
    let limit = std::time::Duration::from_secs(120);
    let codes: Vec<Option<i32>> = (0..5)
        .map(|_| child::run(TEST, "near", limit).and_then(|status| status.code()))
        .take_while(|&code| code != Some(0))
        .collect();
    assert!(codes.len() < 5, "no room near the program in 5 processes");
    assert!(codes.iter().all(|&code| code == Some(NO_ROOM)), "{codes:?}");
}

/// Blocks in a code range near one of this program's functions call it directly, under
/// each strategy; `Err` only if the heap could not be made.
#[cfg(all(target_os = "linux", not(miri)))]
fn calls_into_the_program() -> Result<(), Error> {
    use codeheap::NativeOs;
    let helper = helper_in_the_binary as extern "C" fn() -> u32 as usize;
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let config = HeapConfig {
            code_range: Some(CodeRangeConfig::new(32 << 20).near(helper)),
            ..HeapConfig::with_strategy(strategy)
        };
        let heap = Heap::with_config(NativeOs::new(), config)?;
        let range = heap.code_range().unwrap();
        let reach = heap.arch().call_reach();
        assert!(range.end.max(helper + 1) - range.start.min(helper) <= reach);
        let large = heap.page_allocator().config().code_pages() * heap.page_size() + 1;
        let blocks: Vec<Block> = [64, large, 3000, large]
            .into_iter()
            .map(|size| {
                let mut block = heap.alloc(size).unwrap();
                let code = calls_two(heap.arch(), block.addr(), [helper, helper]);
                heap.write(&mut block, |w| w.write(0, &code)).unwrap();
                block
            })
            .collect();
        for block in &blocks {
            assert_eq!(native_call(&heap, block), 42, "{strategy}");
        }
    }
    Ok(())
}

/// Under an address-space limit (`RLIMIT_AS`, set in a child process of its own) a heap
/// asking for a 64 GiB code range that may shrink settles for a range that fits, under each
/// strategy, and runs code in it; one whose minimum does not fit is refused with
/// `OutOfMemory`. qemu-user does not apply the limit (it would constrain the emulator's
/// own mappings): the child finds out by mapping more than the limit leaves, and there
/// checks only that the range is between its bounds and runs code.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn a_range_settles_for_what_an_address_space_limit_leaves() {
    use codeheap_test_support::child;
    const TEST: &str = "a_range_settles_for_what_an_address_space_limit_leaves";
    if child::role().as_deref() == Some("limited") {
        under_an_address_space_limit();
        std::process::exit(0);
    }
    let status = child::run(TEST, "limited", std::time::Duration::from_secs(120));
    assert_eq!(status.and_then(|status| status.code()), Some(0));
}

/// The child's part of [`a_range_settles_for_what_an_address_space_limit_leaves`].
#[cfg(all(target_os = "linux", not(miri)))]
fn under_an_address_space_limit() {
    use codeheap::NativeOs;
    const MIB: usize = 1 << 20;
    const HEADROOM: usize = 512 * MIB;
    let asked = 64usize << 30;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mapped_kib: usize = (status.lines())
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let limit = (mapped_kib * 1024 + HEADROOM) as libc::rlim_t;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the struct passed; this process is the test's own child.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
    let enforced = {
        // SAFETY: a fresh inaccessible anonymous mapping, unmapped again if made.
        let probe = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                2 * HEADROOM,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if probe != libc::MAP_FAILED {
            // SAFETY: the mapping just made, which nothing uses.
            unsafe { libc::munmap(probe, 2 * HEADROOM) };
        }
        probe == libc::MAP_FAILED
    };
    let min = 16 * MIB;
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let config = |range| HeapConfig {
            code_range: Some(range),
            ..HeapConfig::with_strategy(strategy)
        };
        let range = CodeRangeConfig::new(asked).or_smaller_down_to(min);
        let heap = Heap::with_config(NativeOs::new(), config(range)).unwrap();
        let len = heap.code_range().unwrap().len();
        assert!((min..=asked).contains(&len), "{strategy}: {len:#x}");
        if enforced {
            assert!(len <= HEADROOM, "{strategy}: {len:#x}");
        }
        let block = emit(&heap, 100, 77);
        assert_eq!(native_call(&heap, &block), 77, "{strategy}");
        heap.free(block).unwrap();
        drop(heap);
        if enforced {
            let too_large = CodeRangeConfig::new(asked).or_smaller_down_to(2 * HEADROOM);
            let refused = Heap::with_config(NativeOs::new(), config(too_large));
            assert!(
                matches!(refused, Err(Error::Vm(VmError::OutOfMemory { .. }))),
                "{strategy}: {:?}",
                refused.map(drop)
            );
        }
    }
}

fn sim_heaps(range: usize) -> Vec<Heap<SimOs>> {
    let config = |strategy| HeapConfig {
        code_range: Some(CodeRangeConfig::new(range)),
        ..HeapConfig::with_strategy(strategy)
    };
    let linux = |strategy| Heap::with_config(SimOs::linux(), config(strategy)).unwrap();
    vec![
        Heap::with_config(SimOs::apple(), config(WxStrategy::MapJit)).unwrap(),
        linux(WxStrategy::DualMap),
        linux(WxStrategy::Protect),
        linux(WxStrategy::Rwx),
    ]
}

fn sim_run(heap: &Heap<SimOs>, block: &Block) -> u32 {
    // SAFETY: the simulator decodes the code; it touches no process memory.
    unsafe { heap.call(block) }.unwrap()
}

#[test]
fn every_block_lies_in_the_range() {
    for heap in sim_heaps(16 << 20) {
        let range = heap.code_range().unwrap();
        let page = heap.page_size();
        let blocks: Vec<Block> = (0..200)
            .map(|i| emit(&heap, [64, 700, 3000, page + 1, 9 * page][i % 5], i as u32))
            .collect();
        for (i, block) in blocks.iter().enumerate() {
            assert!(range.start <= block.addr() && block.addr() + block.capacity() <= range.end);
            assert_eq!(sim_run(&heap, block), i as u32);
        }
        let free = heap.vm().code_range_free_bytes().unwrap();
        let reserved = heap.vm().stats().reserved_bytes;
        assert_eq!(free + reserved, range.len(), "{}", heap.strategy());
    }
}

#[test]
fn a_full_range_fails_an_allocation_with_a_typed_error_and_changes_nothing() {
    const RANGE: usize = 1 << 20;
    for heap in sim_heaps(RANGE) {
        let page = heap.page_size();
        let strategy = heap.strategy();
        let small = heap.alloc(64).unwrap();
        let mut blocks = Vec::new();
        let full = loop {
            match heap.alloc(3 * page) {
                Ok(block) => blocks.push(block),
                Err(err) => break err,
            }
            assert!(
                blocks.len() < RANGE / page,
                "{strategy}: the range never filled"
            );
        };
        assert!(
            matches!(full, Error::Vm(VmError::CodeRangeFull { range: RANGE, .. })),
            "{strategy}: {full:?}"
        );
        // A small block still fits on a page the heap has.
        heap.free(heap.alloc(64).unwrap()).unwrap();
        let (stats, pages) = (heap.stats(), heap.page_allocator().stats());
        assert!(heap.alloc(3 * page).is_err());
        assert_eq!(heap.stats(), stats, "{strategy}");
        assert_eq!(heap.page_allocator().stats(), pages, "{strategy}");
        heap.check_invariants().unwrap();
        // Freed and trimmed, the segments' spans go back to the range for the next.
        for block in blocks.drain(..) {
            heap.free(block).unwrap();
        }
        heap.trim().unwrap();
        let free = heap.vm().code_range_free_bytes().unwrap();
        assert_eq!(free + heap.vm().stats().reserved_bytes, RANGE);
        assert!(
            free >= RANGE / 2,
            "{strategy}: only the small block's segment stays"
        );
        let block = emit(&heap, 3 * page, 77);
        assert_eq!(sim_run(&heap, &block), 77);
        heap.free(small).unwrap();
        heap.check_invariants().unwrap();
    }
}

#[test]
fn without_a_range_the_heap_has_none() {
    let heap = Heap::with_config(SimOs::linux(), HeapConfig::default()).unwrap();
    assert_eq!(heap.code_range(), None);
    assert_eq!(heap.vm().code_range_free_bytes(), None);
}
