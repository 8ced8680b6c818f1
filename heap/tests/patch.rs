//! Live patches (`Heap::patch`) on the simulated OS, under every strategy: one aligned store
//! into a finalized block that stays published, flushed so the new code runs, and bad
//! patches refused with nothing written.

use codeheap::{
    Arch, Error, FrameDescription, Heap, SimOs, SimRules, ThreadMode, WxStrategy, current_mode,
    enter_permanent_write_mode, leave_permanent_write_mode,
};

#[path = "common/sim.rs"]
mod sim;
use sim::{heap, read, run};

/// Apple Silicon (16 KiB pages, MAP_JIT), every strategy of the simulated x86-64 Linux, and
/// aarch64 Linux under `DualMap` (its icache needs the flush a patch makes).
fn every_strategy() -> Vec<Heap<SimOs>> {
    let linux = |strategy| heap(SimOs::linux(), Some(strategy));
    vec![
        heap(SimOs::apple(), None),
        linux(WxStrategy::DualMap),
        linux(WxStrategy::Protect),
        linux(WxStrategy::Rwx),
        heap(
            SimOs::new(SimRules::linux_aarch64()),
            Some(WxStrategy::DualMap),
        ),
    ]
}

const AARCH64_MOVZ_W0: u32 = 0x5280_0000;
const AARCH64_MOVK_W0_LSL16: u32 = 0x72A0_0000;
const AARCH64_RET: u32 = 0xD65F_03C0;

/// The instructions that set the return value to `value`, and where they start: x86-64's
/// `mov eax, imm32` immediate (4-byte aligned after three `nop`s), aarch64's `movz` and
/// `movk` pair (one 8-byte word). One aligned store replaces them.
fn value_bytes(arch: Arch, value: u32) -> (usize, Vec<u8>) {
    match arch {
        Arch::X86_64 => (4, value.to_le_bytes().to_vec()),
        Arch::Aarch64 => {
            let movz = AARCH64_MOVZ_W0 | ((value & 0xFFFF) << 5);
            let movk = AARCH64_MOVK_W0_LSL16 | ((value >> 16) << 5);
            let words = [movz, movk].map(u32::to_le_bytes);
            (0, words.concat())
        }
    }
}

/// A function returning `value` whose value one store can change (see `value_bytes`).
fn patchable(arch: Arch, value: u32) -> Vec<u8> {
    let (at, bytes) = value_bytes(arch, value);
    let mut code = match arch {
        Arch::X86_64 => vec![0x90, 0x90, 0x90, 0xB8],
        Arch::Aarch64 => Vec::new(),
    };
    assert_eq!(code.len(), at);
    code.extend_from_slice(&bytes);
    match arch {
        Arch::X86_64 => code.push(0xC3),
        Arch::Aarch64 => code.extend_from_slice(&AARCH64_RET.to_le_bytes()),
    }
    code
}

#[test]
fn a_patch_changes_the_running_code_and_the_block_stays_published() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let block = heap.emit_code(&patchable(arch, 0x1111_1111)).unwrap();
        let entry = heap.entry_point(&block).unwrap();
        assert_eq!(run(&heap, &block), Ok(0x1111_1111));
        let before = heap.stats();

        let (at, bytes) = value_bytes(arch, 0x2222_3333);
        heap.patch(&block, at, &bytes).unwrap();

        assert_eq!(run(&heap, &block), Ok(0x2222_3333), "{}", heap.strategy());
        assert_eq!(heap.entry_point(&block), Ok(entry), "still published");
        assert_eq!(current_mode(), ThreadMode::Execute);
        let after = heap.stats();
        assert_eq!(after.patches, before.patches + 1);
        assert_eq!(after.icache_flushes, before.icache_flushes + 1);
        let (made, skipped) = match heap.strategy() {
            WxStrategy::Protect => (2, 0),
            _ => (0, 2),
        };
        assert_eq!(
            after.protect_calls_made - before.protect_calls_made,
            made,
            "{}: the page opened and closed again",
            heap.strategy()
        );
        assert_eq!(
            after.protect_calls_skipped - before.protect_calls_skipped,
            skipped
        );
        heap.check_invariants().unwrap();
        heap.free(block).unwrap();
    }
}

/// A thread in permanent write mode (a background compiler) patches too, and stays in
/// write mode.
#[test]
fn a_compiler_thread_in_permanent_write_mode_patches_and_keeps_its_mode() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let block = heap.emit_code(&patchable(arch, 5)).unwrap();
        let (at, bytes) = value_bytes(arch, 6);
        enter_permanent_write_mode();
        let patched = heap.patch(&block, at, &bytes);
        let mode = current_mode();
        leave_permanent_write_mode();
        patched.unwrap();
        assert_eq!(mode, ThreadMode::Write);
        assert_eq!(run(&heap, &block), Ok(6));
        heap.free(block).unwrap();
    }
}

/// Patches that are not one aligned store of a whole word (a whole instruction word on
/// aarch64): refused, the code untouched and still running.
#[test]
fn patches_one_store_cannot_make_are_refused_and_write_nothing() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let code = patchable(arch, 7);
        let block = heap.emit_code(&code).unwrap();
        let refused: &[(usize, usize)] = match arch {
            // Empty, odd widths, misaligned, and longer than a word.
            Arch::X86_64 => &[(4, 0), (4, 3), (0, 5), (5, 4), (3, 2), (1, 8), (0, 9)],
            // Part of an instruction word, misaligned words, two words unaligned to 8.
            Arch::Aarch64 => &[(0, 0), (0, 1), (4, 2), (2, 4), (4, 8), (0, 12)],
        };
        for &(offset, len) in refused {
            let bytes = vec![0xEE; len];
            assert_eq!(
                heap.patch(&block, offset, &bytes),
                Err(Error::PatchNotAtomic { offset, len }),
                "{len} bytes at {offset}"
            );
        }
        assert_eq!(read(&heap, block.addr(), code.len()), code);
        assert_eq!(run(&heap, &block), Ok(7));
        assert_eq!(heap.stats().patches, 0);
        heap.free(block).unwrap();
    }
}

#[test]
fn patches_past_the_size_or_of_blocks_that_cannot_run_are_refused() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let code = patchable(arch, 9);
        let size = code.len();
        let block = heap.emit_code(&code).unwrap();
        let word = arch.instruction_alignment();
        let past_the_end = size.next_multiple_of(word);
        for offset in [past_the_end, usize::MAX - (word - 1)] {
            assert_eq!(
                heap.patch(&block, offset, &vec![0; word]),
                Err(Error::OutOfBounds {
                    offset,
                    len: word,
                    size
                }),
                "the block's room past its size is not its code"
            );
        }
        assert_eq!(run(&heap, &block), Ok(9));

        let fresh = heap.alloc(64).unwrap();
        let addr = fresh.addr();
        assert_eq!(
            heap.patch(&fresh, 0, &vec![0; word]),
            Err(Error::NotFinalized { addr })
        );
        heap.free(fresh).unwrap();

        let addr = block.addr();
        heap.free_address(addr).unwrap();
        assert_eq!(
            heap.patch(&block, 0, &vec![0; word]),
            Err(Error::StaleBlock { addr })
        );

        let parked = heap.emit_code(&code).unwrap();
        heap.decommit_all().unwrap();
        let addr = parked.addr();
        assert_eq!(
            heap.patch(&parked, 0, &vec![0; word]),
            Err(Error::Decommitted { addr })
        );
        heap.free(parked).unwrap();
        assert_eq!(heap.stats().patches, 0);
        heap.check_invariants().unwrap();
    }
}

/// A large block (three pages) is patched on any of its pages, its unwind entry untouched.
#[test]
fn a_large_block_is_patched_anywhere_and_keeps_its_unwind_entry() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let page = heap.page_size();
        let mut code = patchable(arch, 10);
        let function = code.len();
        code.resize(3 * page, 0);
        arch.fill_traps(&mut code[function..]);
        let frame = FrameDescription::new(arch);
        let block = heap.emit_code_with_unwind(&code, frame).unwrap();
        let entry = heap.unwind_entry(&block).unwrap();

        let data = 0x0123_4567_89AB_CDEFu64.to_le_bytes();
        let on_the_last_page = 2 * page + 64;
        heap.patch(&block, on_the_last_page, &data).unwrap();
        let (at, bytes) = value_bytes(arch, 11);
        heap.patch(&block, at, &bytes).unwrap();

        assert_eq!(read(&heap, block.addr() + on_the_last_page, 8), data);
        assert_eq!(run(&heap, &block), Ok(11));
        assert_eq!(heap.unwind_entry(&block), Some(entry));
        assert_eq!(heap.stats().patches, 2);
        heap.check_invariants().unwrap();
        heap.free(block).unwrap();
    }
}

/// `patch_address`: the block found by any address in it, with `free_address`'s errors for
/// addresses no live block holds.
#[test]
fn a_patch_by_address_finds_its_block() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let block = heap.emit_code(&patchable(arch, 12)).unwrap();
        let (at, bytes) = value_bytes(arch, 13);
        heap.patch_address(block.addr() + at, &bytes).unwrap();
        assert_eq!(run(&heap, &block), Ok(13));
        assert_eq!(heap.stats().patches, 1);

        let word = arch.instruction_alignment();
        let size = block.size();
        let past_the_size = block.addr() + size.next_multiple_of(word);
        assert!(past_the_size < block.addr() + block.capacity());
        assert_eq!(
            heap.patch_address(past_the_size, &vec![0; word]),
            Err(Error::OutOfBounds {
                offset: past_the_size - block.addr(),
                len: word,
                size
            }),
            "inside the block's room, past its code"
        );
        assert_eq!(
            heap.patch_address(block.addr() + at + 1, &[0; 4]),
            Err(Error::PatchNotAtomic {
                offset: at + 1,
                len: 4
            })
        );
        let fresh = heap.alloc(64).unwrap();
        let addr = fresh.addr();
        assert_eq!(
            heap.patch_address(addr, &vec![0; word]),
            Err(Error::NotFinalized { addr })
        );
        heap.free(fresh).unwrap();
        assert_eq!(
            heap.patch_address(addr, &vec![0; word]),
            Err(Error::NotAllocated { addr }),
            "freed"
        );
        let elsewhere = &word as *const usize as usize & !7;
        assert_eq!(
            heap.patch_address(elsewhere, &vec![0; word]),
            Err(Error::NotFromHeap { addr: elsewhere })
        );
        assert_eq!(run(&heap, &block), Ok(13), "refusals write nothing");
        assert_eq!(heap.stats().patches, 1);
        heap.check_invariants().unwrap();
        heap.free(block).unwrap();
    }
}
