//! Errors of the page allocator. A failed call changes nothing.

use codeheap_virtual_alloc as vm;

/// Why a page-allocator call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Zero pages (or zero bytes of secondary area) were asked for.
    #[error("page count is zero")]
    ZeroPages,
    /// The page count overflows the address space in bytes.
    #[error("{pages} pages overflow the address space")]
    PageCountOverflow {
        /// The page count asked for.
        pages: usize,
    },
    /// The address is not page-aligned.
    #[error("address {addr:#x} is not aligned to the {align:#x}-byte page")]
    Unaligned {
        /// The address given.
        addr: usize,
        /// The page size.
        align: usize,
    },
    /// The address lies in no segment of this allocator.
    #[error("address {addr:#x} is not in any segment")]
    NotInSegment {
        /// The address given.
        addr: usize,
    },
    /// The range starts in a segment's code pages but does not end in them.
    #[error("{pages} pages at {addr:#x} run past the segment's code pages")]
    CrossesSegment {
        /// Start of the range.
        addr: usize,
        /// Its length in pages.
        pages: usize,
    },
    /// A page of the range is not allocated (a double release, or pages never handed out).
    #[error("page {addr:#x} is not allocated")]
    NotAllocated {
        /// The first page of the range that is not allocated.
        addr: usize,
    },
    /// A large allocation is released whole or not at all.
    #[error("large allocation at {base:#x} spans {pages} pages; release all of it")]
    PartialLargeRelease {
        /// Base of the large allocation.
        base: usize,
        /// Its length in pages.
        pages: usize,
    },
    /// The segment's secondary area has no free slot (or the allocator has none).
    #[error("the secondary area of the segment at {segment:#x} is exhausted")]
    SecondaryExhausted {
        /// Base of the segment.
        segment: usize,
    },
    /// More secondary bytes were asked for than a whole secondary area holds.
    #[error("{bytes} bytes do not fit a {area}-byte secondary area")]
    SecondaryTooLarge {
        /// Bytes asked for.
        bytes: usize,
        /// Size of a secondary area.
        area: usize,
    },
    /// A large allocation cannot be released while slots of its secondary area are in use.
    #[error("the large segment at {segment:#x} still has {slots} secondary slots in use")]
    SecondaryInUse {
        /// Base of the large segment.
        segment: usize,
        /// Slots still in use.
        slots: usize,
    },
    /// The address is not a slot handed out by the secondary area.
    #[error("{addr:#x} is not an allocated secondary slot")]
    NotASlot {
        /// The address given.
        addr: usize,
    },
    /// The configuration cannot work.
    #[error("invalid page allocator configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The OS layer refused (a protection mismatch, an OS error, ...).
    #[error(transparent)]
    Vm(#[from] vm::Error),
}

/// The result type of the page allocator.
pub type Result<T, E = Error> = core::result::Result<T, E>;
