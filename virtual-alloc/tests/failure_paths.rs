//! A failed call changes nothing: every system call a reservation, commit, decommit or
//! release makes is failed in turn on the simulator, and afterwards no mapping, descriptor,
//! registration or counter is left different from before.

use codeheap_virtual_alloc::sim::{SimOs, SimRules};
use codeheap_virtual_alloc::{
    Error, MemoryInfo, PageState, Protection, SysCall, ThreadMode, VirtualAlloc, VirtualAllocStats,
    WxStrategy, current_mode, with_write_mode,
};

fn configurations() -> Vec<(&'static str, VirtualAlloc<SimOs>)> {
    let linux = |strategy| VirtualAlloc::with_strategy(SimOs::linux(), strategy).unwrap();
    vec![
        ("apple map-jit", VirtualAlloc::new(SimOs::apple())),
        ("linux dual-map", linux(WxStrategy::DualMap)),
        ("linux protect", linux(WxStrategy::Protect)),
        ("linux rwx", linux(WxStrategy::Rwx)),
        (
            "apple without hardened runtime, protect",
            VirtualAlloc::with_strategy(
                SimOs::new(SimRules::apple().without_hardened_runtime()),
                WxStrategy::Protect,
            )
            .unwrap(),
        ),
    ]
}

/// What the outside world can see of an allocator and its OS.
#[derive(Debug, PartialEq)]
struct Snapshot {
    stats: VirtualAllocStats,
    mapped_pages: usize,
    shared_objects: usize,
    queries: Vec<Result<MemoryInfo, Error>>,
}

fn snapshot(alloc: &VirtualAlloc<SimOs>, probes: &[usize]) -> Snapshot {
    Snapshot {
        stats: alloc.stats(),
        mapped_pages: alloc.os().mapped_pages(),
        shared_objects: alloc.os().shared_objects(),
        queries: probes.iter().map(|&addr| alloc.query(addr)).collect(),
    }
}

/// Runs `op` with the k-th system call failing, for k = 0, 1, ... until `op` succeeds, and
/// checks that every failure left the snapshot unchanged. Returns how many calls failed.
fn fail_each_call<T>(
    label: &str,
    alloc: &VirtualAlloc<SimOs>,
    probes: &[usize],
    mut op: impl FnMut() -> Result<T, Error>,
) -> usize {
    for k in 0.. {
        let before = snapshot(alloc, probes);
        alloc
            .os()
            .fail_after(k, if k % 2 == 0 { libc::EIO } else { libc::ENOMEM });
        let outcome = op();
        alloc.os().clear_failures();
        match outcome {
            Ok(_) => return k as usize,
            Err(err) => {
                assert!(
                    matches!(
                        err,
                        Error::Os { .. } | Error::OutOfMemory { .. } | Error::MapJitRefused { .. }
                    ),
                    "{label}: call {k} failed with {err:?}"
                );
                assert_eq!(
                    snapshot(alloc, probes),
                    before,
                    "{label}: failing call {k} left a trace"
                );
                assert_eq!(
                    current_mode(),
                    ThreadMode::Execute,
                    "{label}: write mode leaked"
                );
            }
        }
    }
    unreachable!()
}

#[test]
fn failed_reservations_leave_nothing() {
    for (label, alloc) in configurations() {
        let page = alloc.page_size();
        let failures = fail_each_call(label, &alloc, &[], || alloc.reserve(3 * page));
        assert!(failures >= 1, "{label}: a reserve makes at least one call");
        if alloc.strategy() == WxStrategy::DualMap {
            assert!(
                failures >= 6,
                "{label}: memfd, ftruncate, reserve, trims, two views"
            );
        }
        assert_eq!(alloc.stats().regions, 1);
    }
}

#[test]
fn failed_reserve_and_commit_leaves_nothing() {
    for (label, alloc) in configurations() {
        let page = alloc.page_size();
        fail_each_call(label, &alloc, &[], || {
            alloc.reserve_and_commit(page, Protection::ExecuteRead)
        });
        assert_eq!(alloc.stats().committed_bytes, page, "{label}");
    }
}

#[test]
fn failed_commits_decommits_and_protects_change_nothing() {
    for (label, alloc) in configurations() {
        let page = alloc.page_size();
        let region = alloc.reserve(4 * page).unwrap();
        let probes: Vec<usize> = (0..4).map(|i| region.base + i * page).collect();

        fail_each_call(label, &alloc, &probes, || {
            alloc.commit(region.base, 2 * page, Protection::ReadWrite)
        });
        with_write_mode(|| alloc.write(region.base + page, b"kept")).unwrap();

        fail_each_call(label, &alloc, &probes, || {
            alloc.protect_expecting(
                region.base,
                2 * page,
                Protection::ExecuteRead,
                Protection::ReadWrite,
            )
        });

        let failures = fail_each_call(label, &alloc, &probes, || alloc.decommit(region.base, page));
        if alloc.strategy() == WxStrategy::DualMap {
            assert_eq!(
                failures, 2,
                "{label}: view to no-access, then the memfd hole"
            );
        }
        let mut kept = [0u8; 4];
        alloc.read(region.base + page, &mut kept).unwrap();
        assert_eq!(
            &kept, b"kept",
            "{label}: the neighbouring page survived every failure"
        );
        assert_eq!(alloc.query(region.base).unwrap().state, PageState::Reserved);
    }
}

#[test]
fn a_failed_dual_map_decommit_puts_the_executable_view_back() {
    let alloc = VirtualAlloc::with_strategy(SimOs::linux(), WxStrategy::DualMap).unwrap();
    let region = alloc
        .reserve_and_commit(4096, Protection::ExecuteRead)
        .unwrap();
    let code = alloc.arch().encode_return_u32(77);
    with_write_mode(|| alloc.write(region.base, code.as_bytes())).unwrap();
    alloc.os().fail_next(SysCall::Fallocate, libc::EIO);
    assert_eq!(
        alloc.decommit(region.base, 4096),
        Err(Error::Os {
            call: SysCall::Fallocate,
            errno: libc::EIO
        })
    );
    assert_eq!(
        alloc.os().protection_at(region.base),
        Some(Protection::ExecuteRead)
    );
    // SAFETY: the simulator decodes the code; it touches no process memory.
    assert_eq!(unsafe { alloc.call(region.base) }, Ok(77));
}

#[test]
fn failed_releases_keep_the_region_usable() {
    for (label, alloc) in configurations() {
        let page = alloc.page_size();
        let region = alloc
            .reserve_and_commit(page, Protection::ReadOnly)
            .unwrap();
        // A MAP_JIT range goes back to the process's one region: its memory is given back
        // with `madvise`, nothing is unmapped.
        let call = match alloc.strategy() {
            WxStrategy::MapJit => SysCall::Madvise,
            _ => SysCall::Munmap,
        };
        alloc.os().fail_next(call, libc::EINVAL);
        assert_eq!(
            alloc.release(region.base),
            Err(Error::Os {
                call,
                errno: libc::EINVAL
            }),
            "{label}"
        );
        assert_eq!(
            alloc.query(region.base).unwrap().state,
            PageState::Committed(Protection::ReadOnly)
        );
        alloc.release(region.base).unwrap();
        assert_eq!(alloc.os().mapped_pages(), 0, "{label}");
        assert_eq!(alloc.os().shared_objects(), 0, "{label}");
    }
}

#[test]
fn memfd_refused_falls_back_to_protect() {
    let os = SimOs::new(SimRules::linux().without_shared_memory());
    let alloc = VirtualAlloc::new(os);
    assert_eq!(alloc.strategy(), WxStrategy::Protect);
    assert_eq!(alloc.os().shared_objects(), 0, "the probe cleaned up");
    assert_eq!(
        VirtualAlloc::new(SimOs::linux()).strategy(),
        WxStrategy::DualMap
    );
}

/// Two failures planned for the same call fail two calls in a row (the simulator used to
/// underflow its countdown on the second one; found by the `heap_ops` fuzz target).
#[test]
fn failures_planned_for_the_same_call_fail_successive_calls() {
    use codeheap_virtual_alloc::Os;
    let os = SimOs::linux();
    os.fail_after(0, libc::ENOMEM);
    os.fail_after(0, libc::EPERM);
    os.fail_after(1, libc::EINVAL);
    let page = os.page_size();
    let outcomes: Vec<_> = (0..4).map(|_| os.map_reserve(page).map(drop)).collect();
    let fail = |errno| Err(Error::from_errno(SysCall::Mmap, errno));
    assert_eq!(
        outcomes,
        [
            fail(libc::ENOMEM),
            fail(libc::EPERM),
            fail(libc::EINVAL),
            Ok(())
        ]
    );
}

/// `sync_cores` is one counted system call; refused, it says so and counts nothing.
#[test]
fn a_refused_core_sync_is_reported_and_not_counted() {
    for (name, alloc) in configurations() {
        let calls = alloc.os().syscalls().get(SysCall::Membarrier);
        alloc.sync_cores().unwrap();
        assert_eq!(
            alloc.os().syscalls().get(SysCall::Membarrier),
            calls + 1,
            "{name}"
        );
        assert_eq!(alloc.stats().core_syncs, 1, "{name}");
        alloc.os().fail_next(SysCall::Membarrier, libc::EPERM);
        assert_eq!(
            alloc.sync_cores(),
            Err(Error::Os {
                call: SysCall::Membarrier,
                errno: libc::EPERM
            }),
            "{name}"
        );
        assert_eq!(
            alloc.stats().core_syncs,
            1,
            "{name}: a refused sync is not counted"
        );
    }
}
