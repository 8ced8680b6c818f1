//! The OS layer of codeheap: what ChakraCore's `VirtualAllocWrapper` and its PAL are, made
//! portable and W^X-correct.
//!
//! An engine ported from Windows keeps making the calls it knows — reserve, commit,
//! decommit, release, protect, query, flush the instruction cache — through
//! [`VirtualAlloc`]. Underneath, every region is managed by one of four [`WxStrategy`]s:
//! `MapJit` (macOS arm64: `mmap(MAP_JIT)` and a per-thread write/execute switch),
//! `DualMap` (Linux: one memfd mapped once executable and once writable), `Protect`
//! (`mprotect` flips, as ChakraCore does) and `Rwx` (no W^X, opt-in only).
//!
//! The operating system sits behind the narrow [`Os`] trait. [`NativeOs`] is the real one;
//! [`sim::SimOs`] is a simulated OS over ordinary heap memory that enforces the rules of
//! Apple Silicon (or Linux) as errors, so the layers above can be checked against macOS on
//! any machine, under miri and under loom.
//!
//! Writes to code memory happen only inside a [`WriteScope`]; code is handed out only to a
//! thread in execute mode. On macOS arm64 the scope drives `pthread_jit_write_protect_np`;
//! elsewhere the same discipline is tracked in software and checked.
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("codeheap supports x86-64 and aarch64 hosts only");

mod arch;
pub mod bitmap;
mod error;
pub mod os;
mod protection;
mod registry;
pub mod sim;
mod strategy;
#[doc(hidden)]
pub mod sync;
mod vm;
mod word;
mod write_mode;

#[cfg(test)]
mod error_coverage;

pub use arch::{AARCH64_BRK, Arch, TinyCode, X86_INT3};
pub use error::{Access, Error, Result};
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use os::NativeOs;
pub use os::{Os, SharedMemory, SysCall};
pub use protection::Protection;
pub use registry::{RegionRegistry, RegionSpan};
pub use strategy::WxStrategy;
pub use vm::{CodeRangeConfig, MemoryInfo, PageState, RegionInfo, VirtualAlloc, VirtualAllocStats};
pub use word::Word;
pub use write_mode::{
    ThreadMode, WriteScope, current_mode, enter_permanent_write_mode, is_permanent_write_mode,
    leave_permanent_write_mode, require_mode, with_write_mode,
};

/// The allocation granularity of reservations, as on Windows: every region starts on a
/// 64 KiB boundary (or on a page boundary if the page is larger).
pub const ALLOCATION_GRANULARITY: usize = 64 * 1024;
