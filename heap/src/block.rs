//! Blocks: the handle given to the caller and the record the heap keeps.

use crate::page::PageId;
use crate::records::Place;

/// A block of code memory handed out by [`Heap::alloc`](crate::Heap::alloc).
///
/// The handle owns the block: [`Heap::free`](crate::Heap::free) consumes it, so a block
/// cannot be freed twice through its handle. It is `Send` (a background compiler hands
/// finished blocks to the threads that run them) but not `Clone`.
#[derive(Debug, PartialEq, Eq)]
pub struct Block {
    pub(crate) addr: usize,
    pub(crate) size: usize,
    pub(crate) capacity: usize,
    pub(crate) id: u64,
    /// Where the heap keeps the block's record (checked against `id` before use).
    pub(crate) place: Place,
    /// The heap's epoch when this handle saw the block finalized (0: it has not): while the
    /// epoch is unchanged, nothing but this handle can have changed the block, so its entry
    /// point is good without asking the heap.
    pub(crate) published: u64,
}

impl Block {
    /// How the handle names its block to the heap.
    pub(crate) fn key(&self) -> HandleKey {
        HandleKey {
            id: self.id,
            place: self.place,
        }
    }

    /// The block's first byte: where its code runs from (its entry point once finalized).
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Bytes asked for: what may be written.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes the block occupies (rounded up to its size class); the tail past `size` holds
    /// traps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

static_assertions::assert_impl_all!(Block: Send, Sync);
// Engines keep a handle per function: its record's place costs it no more than a word.
const _: () = assert!(core::mem::size_of::<Block>() <= 48);
// One record per live block, kept in a slab: half a cache line (W3's 10,000 blocks: 0.32 MB
// of books at 32 bytes against 0.64 MB at 64).
const _: () = assert!(core::mem::size_of::<BlockRecord>() <= 32);
static_assertions::assert_not_impl_any!(Block: Clone);

/// What a handle names its block by: the block's id, unique in the process, and the place
/// of its record, trusted only while the record there has that id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandleKey {
    pub(crate) id: u64,
    pub(crate) place: Place,
}

/// What a block is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockState {
    /// Allocated; holds traps and whatever an abandoned write left. Not runnable.
    Fresh,
    /// A write session is open on it.
    Writing,
    /// Written, padded and flushed: runnable.
    Finalized,
    /// Its memory was decommitted by `decommit_all`: it can only be freed.
    Parked,
}

/// Where a block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// Chunks `first_chunk..` of `page` (a page has at most `MAX_CHUNKS`, 512, chunks).
    Small { page: PageId, first_chunk: u16 },
    /// Whole pages of its own: as many as its size rounds up to, unless a shrink could not
    /// give some back (the heap's map of large blocks counts them).
    Large,
}

/// What the heap keeps of a live block. A small block's capacity follows from its size (its
/// size class: [`Heap::capacity_of`](crate::Heap), floored after a shrink) and where it is
/// written from its page; a large block's pages and write address are in the heap's map of
/// large blocks. So neither is kept here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockRecord {
    pub(crate) id: u64,
    /// The block's first byte.
    pub(crate) addr: usize,
    /// Bytes asked for (less than 4 GiB: `SizeClass::of` refuses more).
    pub(crate) size: u32,
    pub(crate) home: Home,
    pub(crate) state: BlockState,
    /// Whether a large block's pages are open for writing (small blocks: their page's flag).
    pub(crate) open: bool,
    /// Open write sessions on a large block, 0 or 1 (small blocks count on their page).
    pub(crate) large_writers: u8,
    /// A small block's capacity is at least `2^floor` chunks: set when a shrink under
    /// power-of-two classes stops at its page's bucket (`shrink.rs`), 0 otherwise.
    pub(crate) floor: u8,
}

impl BlockRecord {
    /// Bytes asked for.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.size as usize
    }

    /// Bytes from the block's start that may hold something other than traps, what a free
    /// must scrub: its size, to a whole instruction word (the partial word after the code
    /// is zeroed), within its `capacity`. Past that the block holds the traps it was
    /// allocated with, since nothing may write there: write sessions are bounded by the
    /// size, and so must be engines that write through raw pointers.
    #[inline]
    pub(crate) fn dirty_len(&self, instruction_alignment: usize, capacity: usize) -> usize {
        // A power of two (1 or 4): rounded with a mask, not a division, on every free.
        debug_assert!(instruction_alignment.is_power_of_two());
        let mask = instruction_alignment - 1;
        ((self.size() + mask) & !mask).min(capacity)
    }
}

/// Facts about a live block, found by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// The block's first byte.
    pub addr: usize,
    /// Bytes asked for.
    pub size: usize,
    /// Bytes occupied.
    pub capacity: usize,
    /// Whether it is finalized (runnable).
    pub finalized: bool,
    /// Whether it has whole pages of its own.
    pub large: bool,
}
