//! The real OS: reserve, commit, write real machine code, make it executable each
//! strategy's way, call it through a function pointer, patch it, call again, decommit,
//! release, and see the mapping gone. Runs natively on x86-64 and under qemu on aarch64.
#![cfg(all(target_os = "linux", not(miri)))]

use codeheap_test_support::maps::{perms_at, proc_maps};
use codeheap_virtual_alloc::{
    Arch, CodeRangeConfig, Error, NativeOs, Os, PageState, Protection, RegionInfo, SysCall,
    VirtualAlloc, Word, WriteScope, WxStrategy,
};

/// The tests here check `/proc/self/maps` for mappings that must be gone; a test mapping
/// memory at the same moment could land at a freed address (qemu reuses them at once), so
/// they run one at a time.
static MAPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    MAPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn alloc_for(strategy: WxStrategy) -> VirtualAlloc<NativeOs> {
    VirtualAlloc::with_strategy(NativeOs::new(), strategy)
        .unwrap_or_else(|err| panic!("{strategy} must be available on Linux: {err}"))
}

/// Writes `return value` at `addr` and makes it runnable the strategy's way: under Protect
/// the page goes RW for the write and back to RX; elsewhere no protect is needed.
fn emit(alloc: &VirtualAlloc<NativeOs>, region: &RegionInfo, addr: usize, value: u32) {
    let code = alloc.arch().encode_return_u32(value);
    let page = addr - addr % alloc.page_size();
    if region.strategy == WxStrategy::Protect {
        alloc
            .protect_expecting(page, 1, Protection::ReadWrite, Protection::ExecuteRead)
            .unwrap();
        assert_eq!(
            perms_at(addr).as_deref(),
            Some("rw-p"),
            "writable, not executable"
        );
    }
    {
        let _write = WriteScope::enter();
        alloc.write(addr, code.as_bytes()).unwrap();
    }
    if region.strategy == WxStrategy::Protect {
        alloc
            .protect_expecting(page, 1, Protection::ExecuteRead, Protection::ReadWrite)
            .unwrap();
    }
    alloc
        .flush_instruction_cache(addr, code.as_bytes().len())
        .unwrap();
}

/// Calls the code at `addr` through a plain function pointer.
fn call_through_pointer(alloc: &VirtualAlloc<NativeOs>, addr: usize) -> u32 {
    let entry = alloc
        .entry_point(addr)
        .expect("executable, thread in execute mode");
    // SAFETY: `entry` holds a complete `extern "C" fn() -> u32` just emitted and flushed; the
    // region stays committed until the call returns.
    let function: extern "C" fn() -> u32 = unsafe { core::mem::transmute(entry) };
    function()
}

fn round_trip(strategy: WxStrategy) {
    let alloc = alloc_for(strategy);
    let page = alloc.page_size();
    let region = alloc.reserve(4 * page).unwrap();
    assert_eq!(region.strategy, strategy);
    assert_eq!(region.base % 0x10000, 0, "reservations are 64 KiB-aligned");
    assert_eq!(
        perms_at(region.base).as_deref(),
        Some(if strategy == WxStrategy::DualMap {
            "---s"
        } else {
            "---p"
        })
    );

    alloc
        .commit(region.base, 2 * page, Protection::ExecuteRead)
        .unwrap();
    let expected_exec_perms = match strategy {
        WxStrategy::DualMap => "r-xs",
        WxStrategy::Rwx => "rwxp",
        _ => "r-xp",
    };
    assert_eq!(perms_at(region.base).as_deref(), Some(expected_exec_perms));
    if strategy == WxStrategy::DualMap {
        assert_ne!(region.write_base, region.base);
        assert_eq!(perms_at(region.write_base).as_deref(), Some("rw-s"));
    }

    // Two functions on the same page, and one on the next.
    let second = region.base + 64;
    let third = region.base + page + 8;
    emit(&alloc, &region, region.base, 0x1234_5678);
    emit(&alloc, &region, second, 7);
    emit(&alloc, &region, third, 0xC0DE);
    assert_eq!(call_through_pointer(&alloc, region.base), 0x1234_5678);
    assert_eq!(call_through_pointer(&alloc, second), 7);
    assert_eq!(call_through_pointer(&alloc, third), 0xC0DE);

    // Patch in place and run again: the new bytes must be what runs.
    emit(&alloc, &region, region.base, 99);
    assert_eq!(call_through_pointer(&alloc, region.base), 99);
    assert_eq!(
        call_through_pointer(&alloc, second),
        7,
        "neighbour untouched by the patch"
    );

    let stats = alloc.stats();
    if strategy == WxStrategy::Protect {
        assert_eq!(stats.protect_syscalls, 8, "two flips per emit");
        assert_eq!(stats.protect_skipped, 0);
    } else {
        assert_eq!(stats.protect_syscalls, 0);
    }

    // Decommit the second page: it faults again (no access), and reads back zero later.
    alloc.decommit(region.base + page, page).unwrap();
    assert_eq!(
        perms_at(third).as_deref(),
        Some(if strategy == WxStrategy::DualMap {
            "---s"
        } else {
            "---p"
        })
    );
    assert_eq!(alloc.query(third).unwrap().state, PageState::Reserved);
    assert_eq!(
        alloc.entry_point(third),
        Err(Error::NotCommitted {
            addr: region.base + page
        })
    );
    alloc
        .commit(region.base + page, page, Protection::ExecuteRead)
        .unwrap();
    let mut bytes = [0xFFu8; 8];
    alloc.read(third, &mut bytes).unwrap();
    assert_eq!(bytes, [0; 8], "recommitted pages are zero");
    assert_eq!(alloc.stats().committed_bytes, 2 * page);

    alloc.release(region.base).unwrap();
    let maps = proc_maps();
    assert!(
        !maps
            .iter()
            .any(|m| m.start == region.base && m.end <= region.end()),
        "executable view still mapped: {maps:?}"
    );
    if strategy == WxStrategy::DualMap {
        assert!(
            !maps.iter().any(|m| m.start == region.write_base),
            "writable view still mapped"
        );
    }
    assert!(!alloc.is_jit_address(region.base));
    assert_eq!(
        alloc.query(region.base),
        Err(Error::NotInRegion { addr: region.base })
    );
    assert_eq!(alloc.stats().reserved_bytes, 0);
    assert_eq!(alloc.stats().committed_bytes, 0);
}

#[test]
fn dual_map_runs_and_patches_code() {
    let _serial = serial();
    round_trip(WxStrategy::DualMap);
}

#[test]
fn protect_runs_and_patches_code() {
    let _serial = serial();
    round_trip(WxStrategy::Protect);
}

#[test]
fn rwx_runs_and_patches_code() {
    let _serial = serial();
    round_trip(WxStrategy::Rwx);
}

#[test]
fn linux_default_is_dual_map() {
    let _serial = serial();
    let alloc = VirtualAlloc::new(NativeOs::new());
    assert_eq!(alloc.strategy(), WxStrategy::DualMap);
    assert_eq!(
        VirtualAlloc::with_strategy(NativeOs::new(), WxStrategy::MapJit).unwrap_err(),
        Error::StrategyUnavailable {
            strategy: WxStrategy::MapJit,
            reason: "this OS has no MAP_JIT"
        }
    );
}

#[test]
fn dual_map_write_is_seen_through_the_executable_view_at_once() {
    let _serial = serial();
    let alloc = alloc_for(WxStrategy::DualMap);
    let region = alloc
        .reserve_and_commit(alloc.page_size(), Protection::ExecuteRead)
        .unwrap();
    {
        let _write = WriteScope::enter();
        alloc.write(region.base, b"dual").unwrap();
    }
    // SAFETY: the executable view of a committed page is mapped readable.
    let seen = unsafe { core::slice::from_raw_parts(region.base as *const u8, 4) };
    assert_eq!(seen, b"dual");
}

/// The word of `return new` that differs from `return old` (both below 256), and its
/// offset: the immediate's low byte on x86-64, the `movz` on aarch64.
fn patch_word(alloc: &VirtualAlloc<NativeOs>, new: u32) -> (usize, Word) {
    let code = alloc.arch().encode_return_u32(new);
    let (offset, len) = match alloc.arch() {
        Arch::X86_64 => (1, 1),
        Arch::Aarch64 => (0, 4),
    };
    let bytes = &code.as_bytes()[offset..offset + len];
    (offset, Word::from_bytes(bytes).expect("a word"))
}

#[test]
fn a_store_through_the_writable_view_patches_code_that_then_runs() {
    let _serial = serial();
    let alloc = alloc_for(WxStrategy::DualMap);
    let region = alloc
        .reserve_and_commit(alloc.page_size(), Protection::ExecuteRead)
        .unwrap();
    emit(&alloc, &region, region.base, 5);
    assert_eq!(call_through_pointer(&alloc, region.base), 5);
    let (offset, word) = patch_word(&alloc, 7);
    assert!(
        matches!(
            alloc.store(region.base + offset, word),
            Err(Error::WrongThreadMode { .. })
        ),
        "execute mode refuses the store"
    );
    {
        let _write = WriteScope::enter();
        let misaligned = Word::U32(0);
        assert_eq!(
            alloc.store(region.base + 2, misaligned),
            Err(Error::Unaligned {
                addr: region.write_address(region.base + 2),
                align: 4
            })
        );
        alloc.store(region.base + offset, word).unwrap();
    }
    alloc
        .flush_instruction_cache(region.base + offset, word.len())
        .unwrap();
    assert_eq!(call_through_pointer(&alloc, region.base), 7);
}

/// `membarrier` works here (natively, and under qemu, which passes it to the kernel), and
/// the process stays registered: a second sync needs no second registration.
#[test]
fn every_core_is_synchronised_on_request() {
    let alloc = alloc_for(WxStrategy::DualMap);
    alloc.sync_cores().unwrap();
    alloc.sync_cores().unwrap();
    assert_eq!(alloc.stats().core_syncs, 2);
}

#[test]
fn drop_releases_every_region() {
    let _serial = serial();
    let bases: Vec<usize>;
    {
        let alloc = alloc_for(WxStrategy::DualMap);
        bases = (0..3)
            .map(|_| {
                alloc
                    .reserve_and_commit(alloc.page_size(), Protection::ExecuteRead)
                    .unwrap()
                    .base
            })
            .collect();
    }
    let maps = proc_maps();
    for base in bases {
        assert!(
            !maps.iter().any(|m| m.start == base && m.perms == "r-xs"),
            "{base:#x} survived drop"
        );
    }
}

#[test]
fn exhausting_the_address_space_is_out_of_memory_and_leaks_nothing() {
    let _serial = serial();
    let alloc = alloc_for(WxStrategy::Protect);
    let before = proc_maps().len();
    assert_eq!(
        alloc.reserve(1 << 62),
        Err(Error::OutOfMemory {
            call: SysCall::Mmap
        })
    );
    assert_eq!(alloc.stats().regions, 0);
    // Other tests may map concurrently; what matters is no 4 EiB hole is left reserved.
    assert!(proc_maps().len() <= before + 8);
}

#[test]
fn os_refusal_keeps_errno() {
    let _serial = serial();
    let os = NativeOs::new();
    // SAFETY: an unaligned address makes mprotect fail before it touches anything.
    let refused = unsafe { os.protect(1, 4096, Protection::ReadOnly) };
    assert_eq!(
        refused,
        Err(Error::Os {
            call: SysCall::Mprotect,
            errno: libc::EINVAL
        })
    );
}

/// Regions carved from a code range: inside it, running real code, their span inaccessible
/// again (both views) once released and carved again for the next region; the range gone
/// with the allocator.
fn code_range_round_trip(strategy: WxStrategy) {
    const RANGE: usize = 8 << 20;
    let alloc =
        VirtualAlloc::with_code_range(NativeOs::new(), Some(strategy), CodeRangeConfig::new(RANGE))
            .unwrap();
    let range = alloc.code_range().unwrap();
    assert_eq!(range.len(), RANGE);
    let (hidden, runnable) = match strategy {
        WxStrategy::DualMap => ("---s", "r-xs"),
        WxStrategy::Rwx => ("---p", "rwxp"),
        _ => ("---p", "r-xp"),
    };
    assert_eq!(perms_at(range.start).as_deref(), Some(hidden));
    let regions: Vec<RegionInfo> = [64 << 10, 256 << 10, 64 << 10]
        .into_iter()
        .map(|size| alloc.reserve(size).unwrap())
        .collect();
    for (i, region) in regions.iter().enumerate() {
        assert!(range.start <= region.base && region.end() <= range.end);
        alloc
            .commit(region.base, alloc.page_size(), Protection::ExecuteRead)
            .unwrap();
        assert_eq!(perms_at(region.base).as_deref(), Some(runnable));
        emit(&alloc, region, region.base, 100 + i as u32);
    }
    for (i, region) in regions.iter().enumerate() {
        assert_eq!(call_through_pointer(&alloc, region.base), 100 + i as u32);
    }
    let middle = regions[1];
    alloc.release(middle.base).unwrap();
    assert_eq!(perms_at(middle.base).as_deref(), Some(hidden));
    if strategy == WxStrategy::DualMap {
        assert_eq!(perms_at(middle.write_base).as_deref(), Some("---s"));
    }
    let again = alloc.reserve(256 << 10).unwrap();
    assert_eq!(again.base, middle.base);
    alloc
        .commit(again.base, alloc.page_size(), Protection::ExecuteRead)
        .unwrap();
    let mut bytes = [0xFF; 8];
    alloc.read(again.base, &mut bytes).unwrap();
    assert_eq!(bytes, [0; 8], "the old code is gone");
    emit(&alloc, &again, again.base, 7);
    assert_eq!(call_through_pointer(&alloc, again.base), 7);
    assert_eq!(call_through_pointer(&alloc, regions[2].base), 102);
    drop(alloc);
    assert_eq!(perms_at(range.start), None, "the range is unmapped");
}

#[test]
fn dual_map_code_range_runs_code() {
    let _serial = serial();
    code_range_round_trip(WxStrategy::DualMap);
}

#[test]
fn protect_code_range_runs_code() {
    let _serial = serial();
    code_range_round_trip(WxStrategy::Protect);
}

#[test]
fn rwx_code_range_runs_code() {
    let _serial = serial();
    code_range_round_trip(WxStrategy::Rwx);
}

/// A dual-mapped region's memfd is closed on `exec`: a child program the JIT starts must
/// not inherit a writable handle on the parent's code.
#[test]
fn dual_map_memfds_are_closed_on_exec() {
    let _serial = serial();
    let alloc = alloc_for(WxStrategy::DualMap);
    let region = alloc.reserve(alloc.allocation_granularity()).unwrap();
    let link = |fd: &str| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(target) = link(&name) else { continue };
        if !target.to_string_lossy().starts_with("/memfd:codeheap") {
            continue;
        }
        let fd: libc::c_int = name.parse().unwrap();
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // Judged only if the descriptor is still that memfd (another test may close one).
        if flags >= 0 && link(&name) == Some(target) {
            assert_ne!(flags & libc::FD_CLOEXEC, 0, "fd {fd} survives exec");
            seen += 1;
        }
    }
    assert!(seen >= 1, "the region's memfd is open");
    alloc.release(region.base).unwrap();
}
