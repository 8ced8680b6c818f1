//! The fuzz drivers on fixed inputs: a representative sequence passes on every machine,
//! the committed seeds pass, and a chunk bitmap broken on purpose is caught.

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use codeheap_fuzz::{eh_frame, heap, page_allocator, registry};

fn every_machine() -> [heap::Machine; 5] {
    use heap::Machine::*;
    [
        AppleMapJit,
        LinuxDualMap,
        LinuxProtect,
        LinuxRwx,
        LinuxAarch64DualMap,
    ]
}

/// Allocations of several sizes, writes (one with a free nested inside), shrinks, calls,
/// live patches, frees by handle and address, `decommit_all`, more allocations.
fn heap_ops() -> Vec<heap::Op> {
    use heap::{Nested, Op::*};
    vec![
        Alloc { size: 99 },
        Alloc { size: 300 },
        AllocLarge { pages: 1, shave: 7 },
        Alloc { size: 12 },
        Write { which: 0, value: 7 },
        Emit {
            size: 200,
            value: 11,
            fail: false,
            unwind: false,
        },
        Emit {
            size: 5000,
            value: 12,
            fail: false,
            unwind: true,
        },
        Emit {
            size: 80,
            value: 13,
            fail: true,
            unwind: true,
        },
        Call { which: 4 },
        EmitTruncated {
            size: 9000,
            len: 300,
            value: 14,
            unwind: true,
        },
        EmitCodeWithUnwind {
            size: 700,
            value: 15,
        },
        Shrink { which: 2, to: 1000 },
        Shrink { which: 5, to: 20 },
        Shrink {
            which: 0,
            to: u16::MAX,
        },
        Call { which: 5 },
        Patch {
            which: 5,
            value: 0xBEEF,
            offset: 0,
            len: 0,
            by_address: true,
        },
        Call { which: 5 },
        Patch {
            which: 5,
            value: 0,
            offset: 4,
            len: 4,
            by_address: false,
        },
        Patch {
            which: 5,
            value: 0,
            offset: 1,
            len: 3,
            by_address: false,
        },
        Patch {
            which: 1,
            value: 0,
            offset: 0,
            len: 8,
            by_address: false,
        },
        WriteWith {
            which: 1,
            value: 9,
            nested: Nested::Free { which: 1 },
        },
        Call { which: 0 },
        AbandonedWrite { which: 2, len: 40 },
        WritePastEnd { which: 0 },
        FreeInterior {
            which: 0,
            offset: 5,
        },
        FreeForeign {
            near: 0,
            offset: -4096,
        },
        WriteWith {
            which: 0,
            value: 1,
            nested: Nested::DecommitAll,
        },
        Free { which: 1 },
        Alloc { size: 5000 },
        DecommitAll,
        Alloc { size: 64 },
        Write { which: 3, value: 3 },
        FreeAddress { which: 0 },
        Call { which: 0 },
        Patch {
            which: 0,
            value: 0,
            offset: 0,
            len: u8::MAX,
            by_address: false,
        },
    ]
}

#[test]
fn a_representative_heap_sequence_passes_on_every_machine() {
    for machine in every_machine() {
        let variants = [
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (false, false, true),
        ];
        for (chunk_classes, keep_nothing, code_range) in variants {
            let input = heap::Input {
                machine,
                segment_pages: 6,
                max_free_pages: 1,
                chunk_classes,
                keep_nothing,
                code_range,
                ops: heap_ops(),
            };
            if let Err(err) = heap::run(&input) {
                panic!(
                    "{machine:?}, chunk classes {chunk_classes}, keeping nothing {keep_nothing}, \
                     code range {code_range}: {err}"
                );
            }
        }
    }
}

#[test]
fn the_heap_target_catches_a_chunk_marked_free_behind_the_heaps_back() {
    for machine in every_machine() {
        let input = heap::Input {
            machine,
            segment_pages: 6,
            max_free_pages: 1,
            chunk_classes: false,
            keep_nothing: false,
            code_range: false,
            ops: heap_ops(),
        };
        let err = heap::run_with_corruption(&input)
            .expect_err("the check after the corrupted step must fail");
        assert!(err.contains("free"), "{machine:?}: {err}");
    }
}

#[test]
fn a_representative_page_allocator_sequence_passes() {
    use page_allocator::{Op::*, Prot};
    let ops = vec![
        Alloc { pages: 1 },
        Alloc { pages: 3 },
        AllocWithSecondary {
            pages: 2,
            bytes: 100,
        },
        Alloc { pages: 40 },
        Protect {
            which: 0,
            to: Prot::ExecuteRead,
            expected_right: true,
        },
        Protect {
            which: 1,
            to: Prot::ExecuteRead,
            expected_right: false,
        },
        ReleasePart { which: 1, skip: 1 },
        Decommit { which: 0 },
        AllocSecondary {
            which: 2,
            bytes: 64,
        },
        ReleaseBad {
            near: 0,
            offset: 4096 * 200,
            pages: 1,
        },
        Release {
            which: 0,
            discard: false,
        },
        Alloc { pages: 3 },
        Release {
            which: 3,
            discard: true,
        },
        DecommitFree,
        ReleaseSecondary { which: 0 },
        ReleaseSecondaryBad { offset: 8 },
        FailSyscall { call: 0 },
        Alloc { pages: 2 },
        ClearFailures,
        Alloc { pages: 2 },
    ];
    for machine in 0..4 {
        let input = page_allocator::Input {
            machine,
            segment_pages: 8,
            secondary_pages: 1,
            slot_shift: 6,
            max_free_pages: 1,
            ops: ops.clone(),
        };
        if let Err(err) = page_allocator::run(&input) {
            panic!("machine {machine}: {err}");
        }
    }
}

#[test]
fn a_representative_registry_sequence_passes() {
    use registry::{Addr::*, Op::*};
    let input = registry::Input {
        ops: vec![
            Register {
                base: Small(4),
                size: 2,
                extra: 0,
            },
            Register {
                base: Small(5),
                size: 1,
                extra: 0,
            },
            Register {
                base: Small(6),
                size: 1,
                extra: 3,
            },
            Register {
                base: High(10),
                size: 0,
                extra: 11,
            },
            Register {
                base: High(10),
                size: 0,
                extra: 10,
            },
            Lookup { addr: Small(5) },
            LookupRange {
                addr: Small(5),
                size: 0x40,
            },
            Contains { addr: High(0) },
            Unregister { base: Small(5) },
            UnregisterLive { which: 1 },
            Drain,
        ],
    };
    registry::run(&input).unwrap();
}

/// Every committed seed decodes (as libFuzzer hands it to the target) and passes.
#[test]
fn the_committed_seeds_pass() {
    fn each_seed<T: for<'a> Arbitrary<'a>>(target: &str, run: impl Fn(&T) -> Result<(), String>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let Ok(input) = T::arbitrary_take_rest(Unstructured::new(&bytes)) else {
                continue;
            };
            if let Err(err) = run(&input) {
                panic!("{}: {err}", path.display());
            }
            seeds += 1;
        }
        assert!(seeds >= 3, "{target}: {seeds} seeds decode");
    }
    each_seed("heap_ops", heap::run);
    each_seed("page_allocator_ops", page_allocator::run);
    each_seed("registry_ops", registry::run);
    each_seed("eh_frame", eh_frame::run);
}

/// A standard prologue builds and round-trips; a restore with nothing remembered, a row
/// past the end and a misaligned aarch64 row are refused for exactly that reason.
#[test]
fn representative_frames_pass_the_eh_frame_driver() {
    use eh_frame::{Input, Op, Row};
    let row = |advance, op| Row { advance, op };
    let standard = |aarch64| Input {
        aarch64,
        pc: 0x7f00_1234_5670,
        len: 64,
        rows: vec![
            row(4, Op::DefCfaOffset(16)),
            row(
                0,
                Op::Offset {
                    register: 29,
                    offset: -16,
                },
            ),
            row(
                0,
                Op::Offset {
                    register: 30,
                    offset: -8,
                },
            ),
            row(4, Op::DefCfaRegister(29)),
            row(8, Op::RememberState),
            row(
                4,
                Op::DefCfa {
                    register: 31,
                    offset: 0,
                },
            ),
            row(4, Op::RestoreState),
        ],
    };
    eh_frame::run(&standard(true)).unwrap();
    eh_frame::run(&standard(false)).unwrap();
    for rows in [
        vec![row(4, Op::RestoreState)],
        vec![row(80, Op::DefCfaOffset(16))],
        vec![row(2, Op::DefCfaOffset(16))],
        vec![row(8, Op::SameValue(3)), row(-4, Op::SameValue(4))],
        vec![row(
            4,
            Op::Offset {
                register: 19,
                offset: -12,
            },
        )],
    ] {
        let input = Input {
            aarch64: true,
            pc: 0x1000,
            len: 64,
            rows,
        };
        eh_frame::run(&input).unwrap();
    }
}
