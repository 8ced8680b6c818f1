//! codeheap: an executable-memory heap for JIT compilers, modelled on ChakraCore's
//! `CustomHeap`, that keeps W^X on every platform it runs on, Apple Silicon first.
//!
//! ```no_run
//! # #[cfg(target_arch = "x86_64")] {
//! use codeheap::Heap;
//!
//! let heap = Heap::new()?;
//! let mut block = heap.alloc(6)?;
//! // mov eax, 42; ret
//! heap.write(&mut block, |code| code.write(0, &[0xB8, 42, 0, 0, 0, 0xC3]))?;
//! // SAFETY: the block holds a complete `extern "C" fn() -> u32`.
//! let answer: extern "C" fn() -> u32 = unsafe { heap.function(&block)? };
//! assert_eq!(answer(), 42);
//! heap.free(block)?;
//! # }
//! # Ok::<(), codeheap::Error>(())
//! ```
//!
//! The layers underneath are re-exported: [`vm`] (the OS layer: W^X strategies, the
//! per-thread write mode, the simulated OS), [`pages`] (segments of pages) and [`xdata`]
//! (unwind information).
#![deny(unsafe_op_in_unsafe_fn)]

mod addr_hash;
mod block;
mod books;
mod config;
mod error;
mod exclusive;
mod freed;
mod heap;
mod invariants;
mod kept_large;
mod opening;
mod own_line;
mod page;
mod patch;
mod records;
mod shrink;
mod size_class;
mod state;
mod stats;
mod trim;
mod unwind;
mod write;

pub use block::{Block, BlockInfo};
pub use config::{DEFAULT_FREE_PAGES, HeapConfig, SPARE_PAGES, SizeClasses};
pub use error::{Error, Result};
pub use exclusive::Exclusive;
pub use heap::Heap;
pub use size_class::CHUNK;
pub use stats::{BucketStats, HeapStats};
pub use write::CodeWriter;

pub use codeheap_page_allocator as pages;
pub use codeheap_virtual_alloc as vm;
pub use codeheap_xdata as xdata;

pub use codeheap_page_allocator::PageAllocatorConfig;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use codeheap_virtual_alloc::NativeOs;
pub use codeheap_virtual_alloc::sim::{SimOs, SimRules};
pub use codeheap_virtual_alloc::{
    Arch, CodeRangeConfig, Os, Protection, ThreadMode, WriteScope, WxStrategy, current_mode,
    enter_permanent_write_mode, leave_permanent_write_mode, with_write_mode,
};
pub use codeheap_xdata::{
    CfaOp, FrameDescription, RecordingRegistrar, Registrar, SystemRegistrar, WrittenEntry,
};
