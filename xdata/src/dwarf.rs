//! The pieces of DWARF call-frame information the builder emits: register numbers, the
//! `DW_CFA_*` opcodes, and LEB128.

/// A DWARF register number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Register(pub u16);

/// x86-64 registers (System V psABI numbering).
pub mod x86_64 {
    use super::Register;
    /// `rax`
    pub const RAX: Register = Register(0);
    /// `rdx`
    pub const RDX: Register = Register(1);
    /// `rcx`
    pub const RCX: Register = Register(2);
    /// `rbx`
    pub const RBX: Register = Register(3);
    /// `rsi`
    pub const RSI: Register = Register(4);
    /// `rdi`
    pub const RDI: Register = Register(5);
    /// `rbp`, the frame pointer.
    pub const RBP: Register = Register(6);
    /// `rsp`, the stack pointer.
    pub const RSP: Register = Register(7);
    /// `r12`
    pub const R12: Register = Register(12);
    /// `r13`
    pub const R13: Register = Register(13);
    /// `r14`
    pub const R14: Register = Register(14);
    /// `r15`
    pub const R15: Register = Register(15);
    /// The return address column (`rip`).
    pub const RA: Register = Register(16);
}

/// AArch64 registers (AAPCS64 DWARF numbering).
pub mod aarch64 {
    use super::Register;
    /// `x19`, the first callee-saved register.
    pub const X19: Register = Register(19);
    /// `x29`, the frame pointer.
    pub const FP: Register = Register(29);
    /// `x30`, the link register: the return address column.
    pub const LR: Register = Register(30);
    /// `sp`
    pub const SP: Register = Register(31);

    /// `x0`..`x30`.
    pub const fn x(n: u16) -> Register {
        Register(n)
    }

    /// `v0`..`v31`: the SIMD and floating-point registers, whose low halves `d8`..`d15` a
    /// function must preserve, so a frame that saves them describes `v(8)`..`v(15)`.
    pub const fn v(n: u16) -> Register {
        Register(64 + n)
    }
}

pub(crate) const DW_CFA_ADVANCE_LOC: u8 = 0x40;
pub(crate) const DW_CFA_OFFSET: u8 = 0x80;
pub(crate) const DW_CFA_RESTORE: u8 = 0xC0;
pub(crate) const DW_CFA_NOP: u8 = 0x00;
pub(crate) const DW_CFA_ADVANCE_LOC1: u8 = 0x02;
pub(crate) const DW_CFA_ADVANCE_LOC2: u8 = 0x03;
pub(crate) const DW_CFA_ADVANCE_LOC4: u8 = 0x04;
pub(crate) const DW_CFA_OFFSET_EXTENDED: u8 = 0x05;
pub(crate) const DW_CFA_RESTORE_EXTENDED: u8 = 0x06;
pub(crate) const DW_CFA_SAME_VALUE: u8 = 0x08;
pub(crate) const DW_CFA_REMEMBER_STATE: u8 = 0x0A;
pub(crate) const DW_CFA_RESTORE_STATE: u8 = 0x0B;
pub(crate) const DW_CFA_DEF_CFA: u8 = 0x0C;
pub(crate) const DW_CFA_DEF_CFA_REGISTER: u8 = 0x0D;
pub(crate) const DW_CFA_DEF_CFA_OFFSET: u8 = 0x0E;
pub(crate) const DW_CFA_OFFSET_EXTENDED_SF: u8 = 0x11;

pub(crate) fn uleb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(crate) fn sleb128(out: &mut Vec<u8>, mut value: i64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        uleb128(&mut out, value);
        out
    }

    fn s(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        sleb128(&mut out, value);
        out
    }

    #[test]
    fn leb128_matches_the_dwarf_examples() {
        // DWARF 5, section 7.6, figures 22 and 23.
        assert_eq!(u(2), [2]);
        assert_eq!(u(127), [127]);
        assert_eq!(u(128), [0x80, 1]);
        assert_eq!(u(129), [0x81, 1]);
        assert_eq!(u(12857), [0xB9, 0x64]);
        assert_eq!(s(2), [2]);
        assert_eq!(s(-2), [0x7E]);
        assert_eq!(s(127), [0xFF, 0]);
        assert_eq!(s(-127), [0x81, 0x7F]);
        assert_eq!(s(128), [0x80, 1]);
        assert_eq!(s(-128), [0x80, 0x7F]);
        assert_eq!(s(-8), [0x78]);
    }

    #[test]
    fn register_numbers_follow_the_abis() {
        // DWARF for the Arm 64-bit Architecture (AADWARF64), section 4.1: x0-x30 are 0-30,
        // sp 31, v0-v31 64-95.
        assert_eq!([aarch64::x(0), aarch64::x(30)], [Register(0), Register(30)]);
        assert_eq!(
            [aarch64::X19, aarch64::FP, aarch64::LR],
            [aarch64::x(19), aarch64::x(29), aarch64::x(30)]
        );
        assert_eq!(aarch64::SP, Register(31));
        assert_eq!(
            [aarch64::v(0), aarch64::v(8), aarch64::v(31)],
            [Register(64), Register(72), Register(95)]
        );
        // System V x86-64 psABI, figure 3.36: the return address is column 16.
        assert_eq!(
            [x86_64::RBP, x86_64::RSP, x86_64::RA],
            [Register(6), Register(7), Register(16)]
        );
    }
}
