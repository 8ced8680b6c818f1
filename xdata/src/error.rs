//! Errors of the unwind-information layer.

use crate::dwarf::Register;

/// Why building or placing unwind information failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A row's code offset is smaller than the row before it.
    #[error("unwind row at code offset {code_offset} comes after a later one")]
    RowsOutOfOrder {
        /// The offending row's offset.
        code_offset: u32,
    },
    /// A row lies past the end of the function.
    #[error("unwind row at code offset {code_offset} lies past the function's {len} bytes")]
    RowPastEnd {
        /// The row's offset.
        code_offset: u32,
        /// The function's length.
        len: u64,
    },
    /// A row's code offset is not a multiple of the instruction size.
    #[error("unwind row at code offset {code_offset} is not a multiple of {align}")]
    MisalignedRow {
        /// The row's offset.
        code_offset: u32,
        /// The instruction size.
        align: u32,
    },
    /// A register save offset is not a multiple of the data alignment (8).
    #[error("register {register:?} saved at CFA{offset:+} is not a multiple of 8 bytes")]
    UnfactorableOffset {
        /// The register.
        register: Register,
        /// Its offset from the CFA.
        offset: i64,
    },
    /// A `RestoreState` row has no `RememberState` before it to restore.
    #[error("unwind row at code offset {code_offset} restores a state never remembered")]
    UnbalancedRestoreState {
        /// The row's offset.
        code_offset: u32,
    },
    /// The entry does not fit the slot reserved for it.
    #[error("a {needed}-byte entry does not fit a {slot}-byte slot")]
    SlotTooSmall {
        /// The entry's size.
        needed: usize,
        /// The slot's.
        slot: usize,
    },
    /// The OS layer refused the write.
    #[error(transparent)]
    Vm(#[from] codeheap_virtual_alloc::Error),
    /// The frame describes another architecture than the code's.
    #[error("the frame is for {frame:?} code, the heap holds {heap:?} code")]
    ArchMismatch {
        /// The frame's architecture.
        frame: codeheap_virtual_alloc::Arch,
        /// The heap's.
        heap: codeheap_virtual_alloc::Arch,
    },
}

/// The result type of the unwind-information layer.
pub type Result<T, E = Error> = core::result::Result<T, E>;
