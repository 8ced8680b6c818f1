//! What the simulated machine does where a real one would raise a signal.

use core::fmt;

use crate::error::Access;

/// A simulated hardware fault: the access that would have crashed the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at {addr:#x}")]
pub struct Fault {
    /// The address the faulting access touched.
    pub addr: usize,
    /// What went wrong.
    pub kind: FaultKind,
}

/// The kinds of simulated fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Nothing is mapped there (SIGSEGV).
    Unmapped,
    /// The page's protection forbids the access (SIGSEGV / SIGBUS).
    ProtectionViolation(Access),
    /// A store to a MAP_JIT page from a thread in execute mode (Apple: SIGBUS).
    WriteInExecuteMode,
    /// An instruction fetch from a MAP_JIT page by a thread in write mode (Apple: SIGBUS).
    ExecuteInWriteMode,
    /// The instruction was written after the last icache flush of its line: a real CPU may
    /// run the old bytes.
    StaleInstruction,
    /// A trap instruction ran (`int3` / `brk` / `udf`): SIGTRAP or SIGILL.
    Trap,
    /// Bytes the simulated CPU does not decode.
    IllegalInstruction,
    /// An aarch64 instruction fetch from an address that is not a multiple of 4.
    Misaligned,
    /// The function ran too many instructions without returning.
    Runaway,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Unmapped => f.write_str("access to unmapped memory"),
            FaultKind::ProtectionViolation(access) => write!(f, "{access:?} access denied"),
            FaultKind::WriteInExecuteMode => f.write_str("MAP_JIT write in execute mode"),
            FaultKind::ExecuteInWriteMode => f.write_str("MAP_JIT execute in write mode"),
            FaultKind::StaleInstruction => f.write_str("instruction not flushed to the icache"),
            FaultKind::Trap => f.write_str("trap instruction"),
            FaultKind::IllegalInstruction => f.write_str("illegal instruction"),
            FaultKind::Misaligned => f.write_str("misaligned instruction fetch"),
            FaultKind::Runaway => f.write_str("function did not return"),
        }
    }
}
