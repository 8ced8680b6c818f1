//! Segment geometry and the decommit policy.

use crate::error::{Error, Result};
use crate::secondary::MAX_SLOTS;
use crate::segment::MAX_SEGMENT_PAGES;

/// How a [`PageAllocator`](crate::PageAllocator) lays out segments and keeps free pages.
///
/// The defaults are ChakraCore's code-heap geometry (32 pages, the last 2 for unwind data,
/// no free committed pages kept) with unwind slots of 64 bytes instead of 128: see
/// `docs/page-allocator.md` for the arithmetic behind each choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAllocatorConfig {
    /// Pages per segment, secondary area included (at most 64).
    pub segment_pages: usize,
    /// Pages at the end of each segment (and of each large segment) kept for unwind data;
    /// 0 turns the secondary area off (a thunk heap, x86).
    pub secondary_pages: usize,
    /// Bytes per secondary slot: a power of two of at least 16.
    pub secondary_slot_size: usize,
    /// Free pages kept committed for reuse. A release that would keep more decommits the
    /// free pages kept longest ago (other segments' whole free runs, if they make all the
    /// room), else its own excess. ChakraCore's code heap keeps none.
    pub max_free_pages: usize,
}

impl Default for PageAllocatorConfig {
    fn default() -> Self {
        PageAllocatorConfig {
            segment_pages: 32,
            secondary_pages: 2,
            secondary_slot_size: 64,
            max_free_pages: 0,
        }
    }
}

impl PageAllocatorConfig {
    /// The default geometry without a secondary area.
    pub fn without_secondary() -> Self {
        PageAllocatorConfig {
            secondary_pages: 0,
            ..Self::default()
        }
    }

    /// Code pages per segment: the largest request served from a shared segment.
    pub const fn code_pages(&self) -> usize {
        self.segment_pages - self.secondary_pages
    }

    /// Secondary slots per segment for a given page size.
    pub const fn slots_per_segment(&self, page_size: usize) -> usize {
        self.secondary_pages * page_size / self.secondary_slot_size
    }

    pub(crate) fn validate(&self, page_size: usize) -> Result<()> {
        let reason = if self.segment_pages == 0 || self.segment_pages > MAX_SEGMENT_PAGES {
            "segment_pages must be between 1 and 64"
        } else if self.secondary_pages >= self.segment_pages {
            "the secondary area must leave at least one code page"
        } else if !self.secondary_slot_size.is_power_of_two() || self.secondary_slot_size < 16 {
            "secondary_slot_size must be a power of two of at least 16"
        } else if self.secondary_slot_size > page_size {
            "secondary_slot_size must not exceed a page"
        } else if self.slots_per_segment(page_size) > MAX_SLOTS {
            "the secondary area holds more than 2048 slots; use larger slots"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }
}
