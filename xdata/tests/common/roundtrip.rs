//! The `.eh_frame` round trip: build an entry from a frame description, parse it back with
//! gimli, and compare gimli's unwind table with an independent interpretation of the rows.
//! Shared by the property test here and the `eh_frame` fuzz target (`fuzz/src/eh_frame.rs`
//! includes this file).

use std::collections::BTreeMap;

use codeheap_virtual_alloc::Arch;
use codeheap_xdata::dwarf::{aarch64, x86_64};
use codeheap_xdata::{CfaOp, EhFrameEntry, FrameDescription};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection,
};

/// The frame state at some address: the CFA rule and the saved registers' rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The CFA: register and offset.
    pub cfa: (u16, i64),
    /// Registers with a rule other than "undefined".
    pub saved: BTreeMap<u16, Rule>,
}

/// A register's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Saved at CFA + offset.
    Offset(i64),
    /// Unchanged.
    Same,
}

/// A range of code offsets and the state in effect over it.
pub type Table = Vec<(u64, u64, State)>;

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
        CfaOp::RestoreState => *state = stack.pop().expect("the builder refuses unbalanced rows"),
    }
}

/// The expected table of a `len`-byte function, from the rows alone.
pub fn expected_table(frame: &FrameDescription, len: u64) -> Table {
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

/// The table gimli reads from an entry, relative to `pc`.
pub fn gimli_table(bytes: &[u8], pc: u64) -> Result<Table, String> {
    let mut eh_frame = EhFrame::new(bytes, LittleEndian);
    eh_frame.set_address_size(8);
    let bases = BaseAddresses::default();
    let mut entries = eh_frame.entries(&bases);
    let mut fdes = Vec::new();
    while let Some(entry) = entries.next().map_err(|e| format!("entry: {e}"))? {
        if let CieOrFde::Fde(partial) = entry {
            fdes.push(
                partial
                    .parse(EhFrame::cie_from_offset)
                    .map_err(|e| format!("FDE: {e}"))?,
            );
        }
    }
    let [fde] = fdes.as_slice() else {
        return Err(format!("{} FDEs in one entry", fdes.len()));
    };
    if fde.initial_address() != pc {
        return Err(format!(
            "FDE starts at {:#x}, not {pc:#x}",
            fde.initial_address()
        ));
    }
    let mut context = UnwindContext::new();
    let mut rows = fde
        .rows(&eh_frame, &bases, &mut context)
        .map_err(|e| format!("rows: {e}"))?;
    let mut table = Vec::new();
    while let Some(row) = rows.next_row().map_err(|e| format!("row: {e}"))? {
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => (register.0, *offset),
            other => return Err(format!("unexpected CFA rule {other:?}")),
        };
        let mut saved = BTreeMap::new();
        for (register, rule) in row.registers() {
            let rule = match rule {
                RegisterRule::Offset(offset) => Rule::Offset(*offset),
                RegisterRule::SameValue => Rule::Same,
                other => return Err(format!("unexpected register rule {other:?}")),
            };
            saved.insert(register.0, rule);
        }
        table.push((
            row.start_address() - pc,
            row.end_address() - pc,
            State { cfa, saved },
        ));
    }
    Ok(table)
}

/// Builds `frame`'s entry for `len` bytes at `pc` and checks that gimli reads back exactly
/// the rows: the first difference is the error.
pub fn check(frame: &FrameDescription, len: u64, pc: u64) -> Result<(), String> {
    let entry = EhFrameEntry::build(frame, pc, len).map_err(|e| format!("build: {e}"))?;
    let size = EhFrameEntry::size_for(frame).map_err(|e| format!("size_for: {e}"))?;
    if entry.bytes().len() != size || entry.bytes().len() % 8 != 4 {
        return Err(format!(
            "{} bytes, size_for says {size}",
            entry.bytes().len()
        ));
    }
    let expected = expected_table(frame, len);
    let parsed = gimli_table(entry.bytes(), pc)?;
    // gimli splits ranges only where the state may change: compare at every boundary
    // either table has (ranges that cover nothing, as for an empty function, have none).
    let mut points: Vec<u64> = expected
        .iter()
        .chain(&parsed)
        .filter(|r| r.0 < r.1)
        .flat_map(|r| [r.0, r.1 - 1])
        .collect();
    points.sort_unstable();
    points.dedup();
    let find = |table: &Table, at: u64| {
        table
            .iter()
            .find(|(start, end, _)| *start <= at && at < *end)
            .map(|row| row.2.clone())
    };
    for at in points {
        let (got, want) = (find(&parsed, at), find(&expected, at));
        if got != want {
            return Err(format!(
                "at code offset {at}: gimli reads {got:?}, the rows say {want:?}"
            ));
        }
    }
    Ok(())
}
