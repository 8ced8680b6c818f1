//! Segments of code pages for codeheap: ChakraCore's `HeapPageAllocator`.
//!
//! A [`PageAllocator`] sits on a [`VirtualAlloc`](codeheap_virtual_alloc::VirtualAlloc) and
//! hands whole pages to the heap: runs of pages from 64 KiB-aligned segments committed on
//! demand, dedicated large segments for big requests, a decommit policy, protect calls
//! checked against the expected old protection (no system call on `MapJit` and `DualMap`
//! segments), and a secondary area at the end of each segment whose fixed-size slots hold
//! per-function unwind data. See `docs/page-allocator.md`.
#![deny(unsafe_op_in_unsafe_fn)]

mod allocator;
/// The bitmaps the page allocator keeps its segments' and secondary areas' pages in (they
/// live in the OS layer, whose simulator keeps its icache lines in them too).
pub use codeheap_virtual_alloc::bitmap;
mod by_room;
mod config;
mod error;
mod invariants;
mod secondary;
mod segment;
mod state;
mod stats;

pub use allocator::{PageAllocator, PageRun};
pub use config::PageAllocatorConfig;
pub use error::{Error, Result};
pub use secondary::SecondarySlot;
pub use segment::SegmentList;
pub use stats::{PageAllocatorStats, SegmentCounts};
