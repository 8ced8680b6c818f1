//! The builder's entries, parsed by gimli, yield exactly the rows they were given: random
//! rows for both architectures are built into an entry, gimli's unwind table is walked, and
//! every address range's CFA and register rules are compared with an independent
//! interpretation of the rows.

use std::collections::BTreeMap;

use codeheap_virtual_alloc::Arch;
use codeheap_xdata::dwarf::{aarch64, x86_64};
use codeheap_xdata::{CfaOp, EhFrameEntry, FrameDescription, Register};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection,
};
use proptest::prelude::*;

/// The frame state the rows describe at some address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    cfa: (u16, i64),
    saved: BTreeMap<u16, Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Offset(i64),
    Same,
}

fn apply(state: &mut State, op: CfaOp, initial: &State, stack: &mut Vec<State>) {
    match op {
        CfaOp::DefCfa { register, offset } => state.cfa = (register.0, offset as i64),
        CfaOp::DefCfaRegister(register) => state.cfa.0 = register.0,
        CfaOp::DefCfaOffset(offset) => state.cfa.1 = offset as i64,
        CfaOp::Offset { register, offset } => {
            state.saved.insert(register.0, Rule::Offset(offset));
        }
        CfaOp::SameValue(register) => {
            state.saved.insert(register.0, Rule::Same);
        }
        CfaOp::Restore(register) => match initial.saved.get(&register.0) {
            Some(rule) => {
                state.saved.insert(register.0, *rule);
            }
            None => {
                state.saved.remove(&register.0);
            }
        },
        CfaOp::RememberState => stack.push(state.clone()),
        // DW_CFA_restore_state restores the whole row, the CFA included.
        CfaOp::RestoreState => *state = stack.pop().expect("balanced"),
    }
}

fn entry_state(arch: Arch) -> State {
    match arch {
        Arch::X86_64 => State {
            cfa: (x86_64::RSP.0, 8),
            saved: [(x86_64::RA.0, Rule::Offset(-8))].into(),
        },
        Arch::Aarch64 => State {
            cfa: (aarch64::SP.0, 0),
            saved: BTreeMap::new(),
        },
    }
}

/// The expected state for every code offset range, from the rows alone.
fn expected_table(frame: &FrameDescription, len: u64) -> Vec<(u64, u64, State)> {
    let initial = entry_state(frame.arch());
    let mut state = initial.clone();
    let mut stack = Vec::new();
    let mut table = Vec::new();
    let mut start = 0u64;
    for row in frame.rows() {
        let at = u64::from(row.code_offset);
        if at > start {
            table.push((start, at, state.clone()));
            start = at;
        }
        apply(&mut state, row.op, &initial, &mut stack);
    }
    if len > start {
        table.push((start, len, state));
    }
    table
}

/// The table gimli reads from the entry, as (start, end, state) relative to `pc`.
fn gimli_table(bytes: &[u8], pc: u64) -> Vec<(u64, u64, State)> {
    let mut eh_frame = EhFrame::new(bytes, LittleEndian);
    eh_frame.set_address_size(8);
    let bases = BaseAddresses::default();
    let mut entries = eh_frame.entries(&bases);
    let mut fdes = Vec::new();
    while let Some(entry) = entries.next().expect("the entry parses") {
        if let CieOrFde::Fde(partial) = entry {
            fdes.push(
                partial
                    .parse(EhFrame::cie_from_offset)
                    .expect("the FDE parses"),
            );
        }
    }
    assert_eq!(fdes.len(), 1, "one FDE per entry");
    let fde = &fdes[0];
    assert_eq!(fde.initial_address(), pc);
    let mut context = UnwindContext::new();
    let mut rows = fde.rows(&eh_frame, &bases, &mut context).expect("rows");
    let mut table = Vec::new();
    while let Some(row) = rows.next_row().expect("a row") {
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => (register.0, *offset),
            other => panic!("unexpected CFA rule {other:?}"),
        };
        let saved = row
            .registers()
            .map(|(register, rule)| {
                let rule = match rule {
                    RegisterRule::Offset(offset) => Rule::Offset(*offset),
                    RegisterRule::SameValue => Rule::Same,
                    other => panic!("unexpected register rule {other:?}"),
                };
                (register.0, rule)
            })
            .collect();
        table.push((
            row.start_address() - pc,
            row.end_address() - pc,
            State { cfa, saved },
        ));
    }
    table
}

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
        ],
    }
}

/// Random valid rows: offsets in order and aligned, register offsets multiples of 8,
/// remember/restore nested at most three deep.
fn frame(arch: Arch) -> impl Strategy<Value = (FrameDescription, u64)> {
    let align = if arch == Arch::Aarch64 { 4u32 } else { 1 };
    let regs = registers(arch);
    let op = (0..7u8, 0..regs.len(), 0i64..64, 0u64..64);
    (prop::collection::vec((0u32..200, op), 0..24), 0u32..50).prop_map(move |(raw, tail)| {
        let mut frame = FrameDescription::new(arch);
        let mut at = 0u32;
        let mut depth = 0;
        for (step, (kind, reg, signed, unsigned)) in raw {
            at += step % 40 * align;
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
    let entry = EhFrameEntry::build(frame, pc, len).unwrap();
    assert_eq!(entry.bytes().len(), EhFrameEntry::size_for(frame).unwrap());
    assert_eq!(
        entry.bytes().len() % 8,
        4,
        "8-byte records and a 4-byte terminator"
    );
    let expected = expected_table(frame, len);
    let parsed = gimli_table(entry.bytes(), pc);
    // gimli splits ranges only where the state may change; compare address by address at
    // every boundary either table has.
    let mut points: Vec<u64> = expected
        .iter()
        .chain(&parsed)
        .flat_map(|r| [r.0, r.1 - 1])
        .collect();
    points.sort_unstable();
    points.dedup();
    for at in points {
        let find = |table: &[(u64, u64, State)]| {
            table
                .iter()
                .find(|(s, e, _)| *s <= at && at < *e)
                .map(|r| r.2.clone())
        };
        assert_eq!(find(&parsed), find(&expected), "at code offset {at}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

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
