//! Unwind information for JIT code: so panics, C++ exceptions and backtraces cross JIT
//! frames.
//!
//! ChakraCore keeps per-function unwind data in the last pages of each code segment and,
//! off Windows, registers an `.eh_frame` with `__register_frame`. This crate builds those
//! entries — a CIE, an FDE and a terminator, for x86-64 and aarch64, with the rows of the
//! standard frame-pointer prologue or any rows the caller gives ([`FrameDescription`]) —
//! and registers them with the system unwinder ([`SystemRegistrar`]: libgcc semantics on
//! Linux, one FDE at a time on macOS libunwind). The entries live in the page allocator's
//! secondary area; the heap ties an entry to its block: written and registered when the
//! block is finalized, deregistered before it is freed. See `docs/unwind.md`.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod dwarf;
mod eh_frame;
mod error;
mod frame;
mod place;
mod register;

pub use dwarf::Register;
pub use eh_frame::EhFrameEntry;
pub use error::{Error, Result};
pub use frame::{CfaOp, FrameDescription, UnwindRow};
pub use place::write_entry;
pub use register::{RecordingRegistrar, Registrar, Semantics, SystemRegistrar, WrittenEntry};
