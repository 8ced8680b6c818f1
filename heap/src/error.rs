//! Errors of the heap. A failed call changes nothing: no block, page, protection or thread
//! mode is left different.

use codeheap_page_allocator as pages;
use codeheap_virtual_alloc as vm;

/// Why a heap call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A block of zero bytes was asked for.
    #[error("size is zero")]
    ZeroSize,
    /// The size overflows once rounded up to chunks or pages, or is 4 GiB or more (the most
    /// a block's record holds).
    #[error("size {size:#x} overflows once rounded, or is 4 GiB or more")]
    SizeOverflow {
        /// The size asked for.
        size: usize,
    },
    /// A block was asked to shrink to more bytes than it has: blocks never grow in place.
    #[error("a {size}-byte block cannot shrink to {new_size} bytes")]
    CannotGrow {
        /// The block's size.
        size: usize,
        /// The size asked for.
        new_size: usize,
    },
    /// The address is not in any page of this heap.
    #[error("address {addr:#x} was not handed out by this heap")]
    NotFromHeap {
        /// The address given.
        addr: usize,
    },
    /// The address lies inside a live block but is not its start.
    #[error("address {addr:#x} is inside the block at {block:#x}, not its start")]
    InteriorAddress {
        /// The address given.
        addr: usize,
        /// Start of the block holding it.
        block: usize,
    },
    /// No live block starts at the address: it was freed already (a double free) or never
    /// handed out.
    #[error("no live block at {addr:#x} (double free?)")]
    NotAllocated {
        /// The address given.
        addr: usize,
    },
    /// The handle's block was freed by address; a new block may live there now.
    #[error("the block at {addr:#x} was freed; this handle is stale")]
    StaleBlock {
        /// The block's address.
        addr: usize,
    },
    /// A write past the end of the block.
    #[error("writing {len} bytes at offset {offset} overflows a {size}-byte block")]
    OutOfBounds {
        /// Offset of the write in the block.
        offset: usize,
        /// Bytes written.
        len: usize,
        /// The block's size.
        size: usize,
    },
    /// A live patch that one aligned store cannot make: 1, 2, 4 or 8 bytes at an offset
    /// that is a multiple of their count (4 or 8 on aarch64).
    #[error(
        "a live patch is one aligned store of 1, 2, 4 or 8 bytes (a whole instruction word on aarch64), not {len} bytes at offset {offset}"
    )]
    PatchNotAtomic {
        /// Offset of the patch in the block.
        offset: usize,
        /// Bytes in the patch.
        len: usize,
    },
    /// An entry point was asked for before the block was finalized (or while it is being
    /// rewritten).
    #[error("the block at {addr:#x} is not finalized")]
    NotFinalized {
        /// The block's address.
        addr: usize,
    },
    /// The block is being written and cannot be freed or written again meanwhile.
    #[error("the block at {addr:#x} is being written")]
    BlockBusy {
        /// The block's address.
        addr: usize,
    },
    /// The block's memory was decommitted by `decommit_all`: it can only be freed.
    #[error("the block at {addr:#x} was decommitted")]
    Decommitted {
        /// The block's address.
        addr: usize,
    },
    /// The configuration cannot work here.
    #[error("invalid heap configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The unwind information cannot be built (rows past the function, another
    /// architecture, ...).
    #[error(transparent)]
    Unwind(codeheap_xdata::Error),
    /// The page allocator refused.
    #[error(transparent)]
    Pages(pages::Error),
    /// The OS layer refused (wrong thread mode, OS error, ...).
    #[error(transparent)]
    Vm(vm::Error),
}

impl From<vm::Error> for Error {
    fn from(err: vm::Error) -> Error {
        Error::Vm(err)
    }
}

impl From<pages::Error> for Error {
    fn from(err: pages::Error) -> Error {
        // An OS-layer error is reported as one, whichever layer passed it on.
        match err {
            pages::Error::Vm(err) => Error::Vm(err),
            other => Error::Pages(other),
        }
    }
}

/// The result type of the heap.
pub type Result<T, E = Error> = core::result::Result<T, E>;
