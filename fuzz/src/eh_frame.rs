//! The `.eh_frame` builder against gimli: arbitrary rows, valid or not, for either
//! architecture. A frame the builder refuses must have the defect the error names (found
//! here independently); an entry it builds must parse back with gimli into exactly the
//! unwind table the rows describe (the round trip of `xdata/tests/common/roundtrip.rs`).

#[path = "../../xdata/tests/common/roundtrip.rs"]
mod roundtrip;

use arbitrary::Arbitrary;
use codeheap_virtual_alloc::Arch;
use codeheap_xdata::{CfaOp, EhFrameEntry, Error, FrameDescription, Register};

use crate::ensure;

/// A structured fuzz input: the architecture, where the function is, its length and rows.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub aarch64: bool,
    pub pc: u64,
    pub len: u16,
    pub rows: Vec<Row>,
}

/// A row: how far its code offset moves from the previous row's (backwards too), and its
/// operation.
#[derive(Arbitrary, Debug)]
pub struct Row {
    pub advance: i8,
    pub op: Op,
}

/// A `CfaOp` with arbitrary registers and offsets.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    DefCfa { register: u8, offset: u16 },
    DefCfaRegister(u8),
    DefCfaOffset(u16),
    Offset { register: u8, offset: i16 },
    Restore(u8),
    SameValue(u8),
    RememberState,
    RestoreState,
}

impl Op {
    fn cfa_op(self) -> CfaOp {
        let reg = |r: u8| Register(u16::from(r));
        match self {
            Op::DefCfa { register, offset } => CfaOp::DefCfa {
                register: reg(register),
                offset: u64::from(offset),
            },
            Op::DefCfaRegister(r) => CfaOp::DefCfaRegister(reg(r)),
            Op::DefCfaOffset(offset) => CfaOp::DefCfaOffset(u64::from(offset)),
            Op::Offset { register, offset } => CfaOp::Offset {
                register: reg(register),
                offset: i64::from(offset),
            },
            Op::Restore(r) => CfaOp::Restore(reg(r)),
            Op::SameValue(r) => CfaOp::SameValue(reg(r)),
            Op::RememberState => CfaOp::RememberState,
            Op::RestoreState => CfaOp::RestoreState,
        }
    }
}

/// The first defect of the rows, in the order the builder looks for them.
fn first_defect(frame: &FrameDescription, len: u64) -> Option<Error> {
    let align = if frame.arch() == Arch::Aarch64 { 4 } else { 1 };
    let (mut at, mut depth) = (0u32, 0usize);
    for row in frame.rows() {
        let offset = row.code_offset;
        if offset < at {
            return Some(Error::RowsOutOfOrder {
                code_offset: offset,
            });
        }
        if u64::from(offset) > len {
            return Some(Error::RowPastEnd {
                code_offset: offset,
                len,
            });
        }
        if offset % align != 0 {
            return Some(Error::MisalignedRow {
                code_offset: offset,
                align,
            });
        }
        match row.op {
            CfaOp::RememberState => depth += 1,
            CfaOp::RestoreState if depth == 0 => {
                return Some(Error::UnbalancedRestoreState {
                    code_offset: offset,
                });
            }
            CfaOp::RestoreState => depth -= 1,
            CfaOp::Offset { register, offset } if offset % 8 != 0 => {
                return Some(Error::UnfactorableOffset { register, offset });
            }
            _ => {}
        }
        at = offset;
    }
    None
}

/// How deep `RememberState` rows nest.
fn nesting(frame: &FrameDescription) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for row in frame.rows() {
        match row.op {
            CfaOp::RememberState => depth += 1,
            CfaOp::RestoreState => depth = depth.saturating_sub(1),
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    deepest
}

/// Builds the input's frame and checks the outcome, as the module documentation says.
pub fn run(input: &Input) -> Result<(), String> {
    let arch = if input.aarch64 {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    let mut frame = FrameDescription::new(arch);
    let mut at = 0u32;
    for row in input.rows.iter().take(64) {
        at = at.saturating_add_signed(i32::from(row.advance));
        frame.push(at, row.op.cfa_op());
    }
    // Keep `pc + len` inside the address space, as any real function is.
    let pc = input.pc & 0x0000_FFFF_FFFF_FFF0;
    let len = u64::from(input.len);
    match EhFrameEntry::build(&frame, pc, len) {
        Err(err) => {
            let defect = first_defect(&frame, len);
            ensure(defect.as_ref() == Some(&err), || {
                format!("refused with {err:?}, but the first defect is {defect:?}")
            })
        }
        Ok(_) => {
            ensure(first_defect(&frame, len).is_none(), || {
                format!("built despite {:?}", first_defect(&frame, len))
            })?;
            // gimli keeps four remembered rows; deeper nesting is valid DWARF it cannot read.
            if nesting(&frame) > 3 {
                return Ok(());
            }
            roundtrip::check(&frame, len, pc)
        }
    }
}
