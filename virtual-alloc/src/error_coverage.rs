//! Every `Error` variant, produced by a real call. The exhaustive match in `variant` makes a
//! new variant a compile error here until a call producing it is added.

use std::collections::BTreeSet;

use crate::sim::{SimOs, SimRules};
use crate::{
    CodeRangeConfig, Error, Os, Protection, RegionRegistry, SysCall, VirtualAlloc, WxStrategy,
    with_write_mode,
};

fn variant(err: &Error) -> &'static str {
    match err {
        Error::ZeroSize => "ZeroSize",
        Error::SizeOverflow { .. } => "SizeOverflow",
        Error::Unaligned { .. } => "Unaligned",
        Error::NotInRegion { .. } => "NotInRegion",
        Error::RangeOutsideRegion { .. } => "RangeOutsideRegion",
        Error::NotRegionBase { .. } => "NotRegionBase",
        Error::RegionOverlap { .. } => "RegionOverlap",
        Error::NotCommitted { .. } => "NotCommitted",
        Error::ProtectionMismatch { .. } => "ProtectionMismatch",
        Error::AccessDenied { .. } => "AccessDenied",
        Error::WxViolation { .. } => "WxViolation",
        Error::WrongThreadMode { .. } => "WrongThreadMode",
        Error::StrategyUnavailable { .. } => "StrategyUnavailable",
        Error::MapJitRefused { .. } => "MapJitRefused",
        Error::MapJitRegionFull { .. } => "MapJitRegionFull",
        Error::CodeRangeFull { .. } => "CodeRangeFull",
        Error::CodeRangeOutOfReach { .. } => "CodeRangeOutOfReach",
        Error::OutOfMemory { .. } => "OutOfMemory",
        Error::Os { .. } => "Os",
        Error::Fault(_) => "Fault",
    }
}

const VARIANTS: usize = 20;

#[test]
fn every_error_variant_is_produced_by_some_call() {
    let alloc = VirtualAlloc::with_strategy(SimOs::linux(), WxStrategy::Protect).unwrap();
    let page = alloc.page_size();
    let region = alloc.reserve(2 * page).unwrap();
    alloc
        .commit(region.base, page, Protection::ReadOnly)
        .unwrap();
    let registry = RegionRegistry::new();
    registry.register(0x1000, 0x1000, ()).unwrap();

    let produced: Vec<Error> = [
        alloc.reserve(0).map(drop),
        alloc.reserve(usize::MAX).map(drop),
        alloc.commit(region.base + 1, page, Protection::ReadOnly),
        alloc.query(region.base - page).map(drop),
        alloc.commit(region.base, 3 * page, Protection::ReadOnly),
        alloc.release(region.base + page),
        registry.register(0x1800, 0x1000, ()),
        alloc
            .protect(region.base + page, page, Protection::ReadOnly)
            .map(drop),
        alloc.protect_expecting(
            region.base,
            page,
            Protection::ReadWrite,
            Protection::ExecuteRead,
        ),
        with_write_mode(|| alloc.write(region.base, &[1])),
        alloc.commit(region.base, page, Protection::ExecuteReadWrite),
        alloc.write(region.base, &[1]),
        VirtualAlloc::with_strategy(SimOs::linux(), WxStrategy::MapJit).map(drop),
        VirtualAlloc::new(SimOs::new(SimRules::apple().without_entitlement()))
            .reserve(1)
            .map(drop),
        VirtualAlloc::new(SimOs::new(SimRules::apple().with_jit_region_size(1 << 20)))
            .reserve(2 << 20)
            .map(drop),
        VirtualAlloc::with_code_range(SimOs::linux(), None, CodeRangeConfig::new(64 << 10))
            .and_then(|ranged| ranged.reserve(128 << 10))
            .map(drop),
        // The simulator's addresses are nowhere near the top of the address space.
        VirtualAlloc::with_code_range(
            SimOs::linux(),
            None,
            CodeRangeConfig::new(64 << 10).near(usize::MAX - (1 << 20)),
        )
        .map(drop),
        alloc.reserve(1 << 50).map(drop),
        {
            alloc.os().fail_next(SysCall::Mprotect, libc::EIO);
            alloc
                .protect(region.base, page, Protection::ReadWrite)
                .map(drop)
        },
        // SAFETY: the simulator touches no process memory.
        unsafe { alloc.os().call(region.base) }.map(drop),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();

    let names: BTreeSet<_> = produced.iter().map(variant).collect();
    assert_eq!(names.len(), VARIANTS, "produced: {produced:#?}");
    assert_eq!(
        produced.len(),
        VARIANTS,
        "one error per call: {produced:#?}"
    );
}
