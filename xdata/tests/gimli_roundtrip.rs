//! The builder's entries, parsed by gimli, yield exactly the rows they were given: random
//! rows for both architectures are built into an entry, gimli's unwind table is walked, and
//! every address range's CFA and register rules are compared with an independent
//! interpretation of the rows.

use codeheap_virtual_alloc::Arch;
use codeheap_xdata::dwarf::{aarch64, x86_64};
use codeheap_xdata::{CfaOp, FrameDescription, Register};
use proptest::prelude::*;

mod common;
use common::roundtrip::{self, expected_table};

fn registers(arch: Arch) -> Vec<Register> {
    match arch {
        Arch::X86_64 => vec![
            x86_64::RBX,
            x86_64::RBP,
            x86_64::RSP,
            x86_64::R12,
            x86_64::R15,
        ],
        Arch::Aarch64 => vec![
            aarch64::x(19),
            aarch64::x(20),
            aarch64::FP,
            aarch64::LR,
            aarch64::SP,
            // v0: the first register past DW_CFA_offset's and DW_CFA_restore's 6-bit field.
            aarch64::v(0),
            aarch64::v(8),
        ],
    }
}

/// Random valid rows: offsets in order and aligned, register offsets multiples of 8,
/// remember/restore nested at most three deep. Most rows follow the last within a few
/// instructions; some are far enough on for each of the longer advance encodings (a
/// factored distance of 64 or more, 256 or more, 65,536 or more).
fn frame(arch: Arch) -> impl Strategy<Value = (FrameDescription, u64)> {
    let align = if arch == Arch::Aarch64 { 4u32 } else { 1 };
    let regs = registers(arch);
    let op = (0..7u8, 0..regs.len(), 0i64..64, 0u64..64);
    let step = prop_oneof![8 => 0u32..40, 1 => 40u32..300, 1 => 300u32..70_000];
    (prop::collection::vec((step, op), 0..24), 0u32..50).prop_map(move |(raw, tail)| {
        let mut frame = FrameDescription::new(arch);
        let mut at = 0u32;
        let mut depth = 0;
        for (step, (kind, reg, signed, unsigned)) in raw {
            at += step * align;
            let register = regs[reg];
            let op = match kind {
                0 => CfaOp::DefCfa {
                    register,
                    offset: unsigned * 8,
                },
                1 => CfaOp::DefCfaRegister(register),
                2 => CfaOp::DefCfaOffset(unsigned * 8),
                3 => CfaOp::Offset {
                    register,
                    offset: (signed - 32) * 8,
                },
                4 => CfaOp::SameValue(register),
                5 => CfaOp::Restore(register),
                _ if depth > 0 && unsigned % 2 == 0 => {
                    depth -= 1;
                    CfaOp::RestoreState
                }
                // Unwinders keep a small state stack (gimli's holds four rows).
                _ if depth < 3 => {
                    depth += 1;
                    CfaOp::RememberState
                }
                _ => CfaOp::SameValue(register),
            };
            frame.push(at, op);
        }
        let len = u64::from(at + (tail + 1) * align);
        (frame, len)
    })
}

fn check(frame: &FrameDescription, len: u64, pc: u64) {
    if let Err(failure) = roundtrip::check(frame, len, pc) {
        panic!("{failure}");
    }
}

proptest! {
    #![proptest_config(codeheap_test_support::proptest_config(256, 4))]

    #[test]
    fn x86_64_rows_round_trip((frame, len) in frame(Arch::X86_64), pc in any::<u64>().prop_map(|p| p >> 8)) {
        check(&frame, len, pc);
    }

    #[test]
    fn aarch64_rows_round_trip((frame, len) in frame(Arch::Aarch64), pc in any::<u64>().prop_map(|p| p >> 8 << 2)) {
        check(&frame, len, pc);
    }
}

#[test]
fn standard_frames_round_trip() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let frame = FrameDescription::standard(arch);
        check(&frame, 64, 0x7f00_1234_0000);
        let table = expected_table(&frame, 64);
        let fp = if arch == Arch::X86_64 {
            x86_64::RBP
        } else {
            aarch64::FP
        };
        assert_eq!(
            table.last().unwrap().2.cfa,
            (fp.0, 16),
            "CFA = frame pointer + 16"
        );
    }
}
