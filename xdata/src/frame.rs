//! What a JIT function's frame looks like at each point of its code: the rows of its
//! call-frame table, as the caller describes them.

use codeheap_virtual_alloc::Arch;

use crate::dwarf::{Register, aarch64, x86_64};

/// One change to the frame state, in effect from a code offset on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CfaOp {
    /// The CFA is `register + offset`.
    DefCfa {
        /// Register the CFA is based on.
        register: Register,
        /// Offset from it (non-negative).
        offset: u64,
    },
    /// The CFA is now based on `register`, same offset.
    DefCfaRegister(Register),
    /// The CFA is now at `offset` from the same register.
    DefCfaOffset(u64),
    /// `register` is saved at `CFA + offset` (`offset` a multiple of 8, usually negative).
    Offset {
        /// The saved register.
        register: Register,
        /// Where it is saved, from the CFA.
        offset: i64,
    },
    /// `register` has its value from the function's entry again.
    Restore(Register),
    /// `register` was not changed by the function.
    SameValue(Register),
    /// Pushes the current state (for a mid-function epilogue).
    RememberState,
    /// Pops the state pushed by `RememberState`.
    RestoreState,
}

/// A [`CfaOp`] in effect from `code_offset` bytes into the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// Offset from the function's first byte (a multiple of the instruction size).
    pub code_offset: u32,
    /// The change.
    pub op: CfaOp,
}

/// How to unwind one JIT function: its architecture and the rows after the entry state.
///
/// At entry the CFA is the stack pointer before the call (x86-64: `rsp + 8`, the return
/// address at `CFA - 8`; aarch64: `sp`, the return address in `x30`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameDescription {
    arch: Arch,
    rows: Vec<UnwindRow>,
}

impl FrameDescription {
    /// A frame with only the entry state: for leaf functions that touch neither the stack
    /// nor the return address.
    pub fn new(arch: Arch) -> FrameDescription {
        FrameDescription {
            arch,
            rows: Vec::new(),
        }
    }

    /// The standard frame-pointer prologue and nothing else:
    /// x86-64 `push rbp; mov rbp, rsp` (1 + 3 bytes);
    /// aarch64 `stp x29, x30, [sp, #-16]!; mov x29, sp` (4 + 4 bytes).
    pub fn standard(arch: Arch) -> FrameDescription {
        let frame = FrameDescription::new(arch);
        match arch {
            Arch::X86_64 => frame
                .row(1, CfaOp::DefCfaOffset(16))
                .row(
                    1,
                    CfaOp::Offset {
                        register: x86_64::RBP,
                        offset: -16,
                    },
                )
                .row(4, CfaOp::DefCfaRegister(x86_64::RBP)),
            Arch::Aarch64 => frame
                .row(4, CfaOp::DefCfaOffset(16))
                .row(
                    4,
                    CfaOp::Offset {
                        register: aarch64::FP,
                        offset: -16,
                    },
                )
                .row(
                    4,
                    CfaOp::Offset {
                        register: aarch64::LR,
                        offset: -8,
                    },
                )
                .row(8, CfaOp::DefCfaRegister(aarch64::FP)),
        }
    }

    /// Adds a row (rows must come in code-offset order; the builder checks).
    pub fn row(mut self, code_offset: u32, op: CfaOp) -> FrameDescription {
        self.push(code_offset, op);
        self
    }

    /// Adds a row in place.
    pub fn push(&mut self, code_offset: u32, op: CfaOp) {
        self.rows.push(UnwindRow { code_offset, op });
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The rows after the entry state.
    pub fn rows(&self) -> &[UnwindRow] {
        &self.rows
    }
}
