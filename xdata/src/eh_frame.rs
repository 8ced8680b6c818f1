//! `.eh_frame` entries: one CIE, one FDE and a zero terminator, self-contained, so that one
//! entry can be handed to the system unwinder on its own.
//!
//! The CIE has no augmentation, so the FDE's address fields are absolute 8-byte pointers
//! (`DW_EH_PE_absptr`): the bytes depend only on the function's address and length, not on
//! where the entry is stored. Code alignment is 1 on x86-64 and 4 on aarch64, data alignment
//! -8, the return address column 16 (`rip`) or 30 (`x30`). Records are padded with
//! `DW_CFA_nop` to 8 bytes.

use codeheap_virtual_alloc::Arch;

use crate::dwarf::*;
use crate::error::{Error, Result};
use crate::frame::{CfaOp, FrameDescription};

/// Bytes of the zero-length record that ends an `.eh_frame` list.
const TERMINATOR: usize = 4;

/// The CIE parameters of an architecture.
struct CieParams {
    code_align: u32,
    data_align: i64,
    return_address: Register,
    initial: &'static [CfaOp],
}

fn cie_params(arch: Arch) -> CieParams {
    match arch {
        Arch::X86_64 => CieParams {
            code_align: 1,
            data_align: -8,
            return_address: x86_64::RA,
            initial: &[
                CfaOp::DefCfa {
                    register: x86_64::RSP,
                    offset: 8,
                },
                CfaOp::Offset {
                    register: x86_64::RA,
                    offset: -8,
                },
            ],
        },
        Arch::Aarch64 => CieParams {
            code_align: 4,
            data_align: -8,
            return_address: aarch64::LR,
            initial: &[CfaOp::DefCfa {
                register: aarch64::SP,
                offset: 0,
            }],
        },
    }
}

/// One function's `.eh_frame` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EhFrameEntry {
    bytes: Vec<u8>,
    fde_offset: usize,
}

impl EhFrameEntry {
    /// The entry for `frame` describing the `len` bytes of code at `pc`. Rows must be in
    /// code-offset order, inside the function, instruction-aligned, with register offsets
    /// that are multiples of 8.
    pub fn build(frame: &FrameDescription, pc: u64, len: u64) -> Result<EhFrameEntry> {
        let params = cie_params(frame.arch());
        let mut bytes = Vec::with_capacity(64);
        record(&mut bytes, |out| {
            out.extend_from_slice(&0u32.to_le_bytes()); // CIE id
            out.push(1); // version
            out.push(0); // augmentation ""
            uleb128(out, u64::from(params.code_align));
            sleb128(out, params.data_align);
            out.push(params.return_address.0 as u8);
            for op in params.initial {
                encode_op(out, *op, &params)?;
            }
            Ok(())
        })?;
        let fde_offset = bytes.len();
        record(&mut bytes, |out| {
            // The CIE pointer: from this field back to the CIE, which starts at 0.
            out.extend_from_slice(&((fde_offset + 4) as u32).to_le_bytes());
            out.extend_from_slice(&pc.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            encode_rows(out, frame, len, &params)
        })?;
        bytes.extend_from_slice(&[0; TERMINATOR]);
        Ok(EhFrameEntry { bytes, fde_offset })
    }

    /// The entry's size for `frame`: the same for every address and length it fits.
    pub fn size_for(frame: &FrameDescription) -> Result<usize> {
        Ok(EhFrameEntry::build(frame, 0, u64::MAX)?.bytes.len())
    }

    /// The bytes: CIE, FDE, terminator.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where the FDE starts in the bytes.
    pub fn fde_offset(&self) -> usize {
        self.fde_offset
    }
}

/// Appends a length-prefixed record, padded with `DW_CFA_nop` to a multiple of 8 bytes.
fn record(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    body(out)?;
    while !(out.len() - start).is_multiple_of(8) {
        out.push(DW_CFA_NOP);
    }
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    Ok(())
}

fn encode_rows(
    out: &mut Vec<u8>,
    frame: &FrameDescription,
    len: u64,
    params: &CieParams,
) -> Result<()> {
    let mut at = 0u32;
    let mut remembered = 0usize;
    for row in frame.rows() {
        let offset = row.code_offset;
        if offset < at {
            return Err(Error::RowsOutOfOrder {
                code_offset: offset,
            });
        }
        if u64::from(offset) > len {
            return Err(Error::RowPastEnd {
                code_offset: offset,
                len,
            });
        }
        if offset % params.code_align != 0 {
            return Err(Error::MisalignedRow {
                code_offset: offset,
                align: params.code_align,
            });
        }
        match row.op {
            CfaOp::RememberState => remembered += 1,
            CfaOp::RestoreState if remembered == 0 => {
                return Err(Error::UnbalancedRestoreState {
                    code_offset: offset,
                });
            }
            CfaOp::RestoreState => remembered -= 1,
            _ => {}
        }
        advance(out, (offset - at) / params.code_align);
        at = offset;
        encode_op(out, row.op, params)?;
    }
    Ok(())
}

fn advance(out: &mut Vec<u8>, delta: u32) {
    match delta {
        0 => {}
        1..0x40 => out.push(DW_CFA_ADVANCE_LOC | delta as u8),
        0x40..0x100 => out.extend_from_slice(&[DW_CFA_ADVANCE_LOC1, delta as u8]),
        0x100..0x1_0000 => {
            out.push(DW_CFA_ADVANCE_LOC2);
            out.extend_from_slice(&(delta as u16).to_le_bytes());
        }
        _ => {
            out.push(DW_CFA_ADVANCE_LOC4);
            out.extend_from_slice(&delta.to_le_bytes());
        }
    }
}

fn encode_op(out: &mut Vec<u8>, op: CfaOp, params: &CieParams) -> Result<()> {
    match op {
        CfaOp::DefCfa { register, offset } => {
            out.push(DW_CFA_DEF_CFA);
            uleb128(out, register.0.into());
            uleb128(out, offset);
        }
        CfaOp::DefCfaRegister(register) => {
            out.push(DW_CFA_DEF_CFA_REGISTER);
            uleb128(out, register.0.into());
        }
        CfaOp::DefCfaOffset(offset) => {
            out.push(DW_CFA_DEF_CFA_OFFSET);
            uleb128(out, offset);
        }
        CfaOp::Offset { register, offset } => {
            if offset % params.data_align != 0 {
                return Err(Error::UnfactorableOffset { register, offset });
            }
            let factored = offset / params.data_align;
            match u64::try_from(factored) {
                Ok(factored) if register.0 < 64 => {
                    out.push(DW_CFA_OFFSET | register.0 as u8);
                    uleb128(out, factored);
                }
                Ok(factored) => {
                    out.push(DW_CFA_OFFSET_EXTENDED);
                    uleb128(out, register.0.into());
                    uleb128(out, factored);
                }
                Err(_) => {
                    out.push(DW_CFA_OFFSET_EXTENDED_SF);
                    uleb128(out, register.0.into());
                    sleb128(out, factored);
                }
            }
        }
        CfaOp::Restore(register) if register.0 < 64 => out.push(DW_CFA_RESTORE | register.0 as u8),
        CfaOp::Restore(register) => {
            out.push(DW_CFA_RESTORE_EXTENDED);
            uleb128(out, register.0.into());
        }
        CfaOp::SameValue(register) => {
            out.push(DW_CFA_SAME_VALUE);
            uleb128(out, register.0.into());
        }
        CfaOp::RememberState => out.push(DW_CFA_REMEMBER_STATE),
        CfaOp::RestoreState => out.push(DW_CFA_RESTORE_STATE),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standard_entry_fits_a_64_byte_slot() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let size = EhFrameEntry::size_for(&FrameDescription::standard(arch)).unwrap();
            assert!(size <= 64, "{arch:?}: {size} bytes");
            assert_eq!(size % 4, 0);
        }
    }

    #[test]
    fn x86_64_standard_entry_bytes() {
        let entry =
            EhFrameEntry::build(&FrameDescription::standard(Arch::X86_64), 0x1000, 0x40).unwrap();
        let b = entry.bytes();
        // CIE: length 20, id 0, version 1, "", code 1, data -8, ra 16,
        // def_cfa rsp+8, offset ra at cfa-8, two nops.
        assert_eq!(
            &b[..24],
            &[
                20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0x78, 16, 0x0C, 7, 8, 0x90, 1, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(entry.fde_offset(), 24);
        // FDE: CIE pointer 28 back, pc, range, then advance 1; def_cfa_offset 16;
        // offset rbp at cfa-16; advance 3; def_cfa_register rbp.
        assert_eq!(&b[28..32], &28u32.to_le_bytes());
        assert_eq!(&b[32..40], &0x1000u64.to_le_bytes());
        assert_eq!(&b[40..48], &0x40u64.to_le_bytes());
        assert_eq!(&b[48..56], &[0x41, 0x0E, 16, 0x86, 2, 0x43, 0x0D, 6]);
        assert_eq!(&b[b.len() - 4..], &[0, 0, 0, 0], "terminator");
    }

    #[test]
    fn aarch64_standard_entry_bytes() {
        let entry =
            EhFrameEntry::build(&FrameDescription::standard(Arch::Aarch64), 0x1000, 0x40).unwrap();
        let b = entry.bytes();
        // CIE: length 12, id 0, version 1, "", code 4, data -8 (as compilers emit, so that
        // saves below the CFA take the one-byte DW_CFA_offset), ra x30, def_cfa sp+0.
        assert_eq!(
            &b[..16],
            &[12, 0, 0, 0, 0, 0, 0, 0, 1, 0, 4, 0x78, 30, 0x0C, 31, 0]
        );
        assert_eq!(entry.fde_offset(), 16);
        // FDE: CIE pointer 20 back, pc, range, then advance 1 (4 bytes); def_cfa_offset 16;
        // offset x29 at cfa-16, x30 at cfa-8; advance 1; def_cfa_register x29; nops.
        assert_eq!(&b[16..20], &36u32.to_le_bytes());
        assert_eq!(&b[20..24], &20u32.to_le_bytes());
        assert_eq!(&b[24..32], &0x1000u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x40u64.to_le_bytes());
        assert_eq!(
            &b[40..56],
            &[
                0x41, 0x0E, 16, 0x9D, 2, 0x9E, 1, 0x41, 0x0D, 29, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(&b[56..], &[0, 0, 0, 0], "terminator");
    }

    #[test]
    fn bad_rows_are_refused() {
        let out_of_order = FrameDescription::new(Arch::X86_64)
            .row(4, CfaOp::DefCfaOffset(16))
            .row(2, CfaOp::DefCfaOffset(24));
        assert_eq!(
            EhFrameEntry::build(&out_of_order, 0, 16),
            Err(Error::RowsOutOfOrder { code_offset: 2 })
        );
        // A row at the end itself is not past it (it holds for no byte of the function).
        let at_end = FrameDescription::new(Arch::X86_64).row(16, CfaOp::DefCfaOffset(16));
        assert!(EhFrameEntry::build(&at_end, 0, 16).is_ok());
        let past_end = FrameDescription::new(Arch::X86_64).row(17, CfaOp::DefCfaOffset(16));
        assert_eq!(
            EhFrameEntry::build(&past_end, 0, 16),
            Err(Error::RowPastEnd {
                code_offset: 17,
                len: 16
            })
        );
        let misaligned = FrameDescription::new(Arch::Aarch64).row(2, CfaOp::DefCfaOffset(16));
        assert_eq!(
            EhFrameEntry::build(&misaligned, 0, 16),
            Err(Error::MisalignedRow {
                code_offset: 2,
                align: 4
            })
        );
        let unbalanced = FrameDescription::new(Arch::X86_64)
            .row(1, CfaOp::RememberState)
            .row(2, CfaOp::RestoreState)
            .row(3, CfaOp::RestoreState);
        assert_eq!(
            EhFrameEntry::build(&unbalanced, 0, 16),
            Err(Error::UnbalancedRestoreState { code_offset: 3 })
        );
        let unfactorable = FrameDescription::new(Arch::X86_64).row(
            1,
            CfaOp::Offset {
                register: x86_64::RBX,
                offset: -12,
            },
        );
        assert_eq!(
            EhFrameEntry::build(&unfactorable, 0, 16),
            Err(Error::UnfactorableOffset {
                register: x86_64::RBX,
                offset: -12
            })
        );
    }
}
