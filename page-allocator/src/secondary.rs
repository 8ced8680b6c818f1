//! The secondary area of a segment: fixed-size slots for per-function unwind data.
//!
//! ChakraCore keeps xdata in the last pages of every code segment (on Windows it must lie
//! within 32 bits of the code) and counts a segment as full once its xdata slots run out.
//! The slots here are handed out first-fit from a bitmap, in runs of contiguous slots for
//! entries larger than one; a second bitmap marks where each run starts, so a double
//! release or a release of a run's interior is detected rather than corrupting a free list.

use crate::bitmap::BitVec;

/// Most slots one secondary area can have (a bound on each segment's books).
pub(crate) const MAX_SLOTS: usize = 2048;

/// A run of slots handed out from a segment's secondary area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecondarySlot {
    /// Address of the first byte (in the region's executable view; write it with the
    /// allocator's `VirtualAlloc`).
    pub addr: usize,
    /// Its size in bytes: a whole number of slots.
    pub size: usize,
    /// Base of the segment it belongs to.
    pub segment: usize,
}

#[derive(Debug)]
pub(crate) struct SlotAllocator {
    base: usize,
    slot_size: usize,
    /// Whether the area's pages are committed: on the first slot handed out, so segments
    /// of a heap that never asks for a slot cost no memory for them.
    pub(crate) committed: bool,
    /// Set = free. Sized to the area (128 slots for two 4 KiB pages of 64-byte slots):
    /// every segment has one, so a fixed bitmap for the largest area would cost each
    /// segment half a kilobyte of books.
    free: BitVec,
    /// Set = the first slot of an allocated run.
    starts: BitVec,
}

impl SlotAllocator {
    pub(crate) fn new(base: usize, area_size: usize, slot_size: usize) -> SlotAllocator {
        SlotAllocator {
            base,
            slot_size,
            committed: false,
            free: BitVec::ones(area_size / slot_size),
            starts: BitVec::zeroed(area_size / slot_size),
        }
    }

    /// Whether a run of `slots` slots is free.
    pub(crate) fn can_fit(&self, slots: usize) -> bool {
        self.free.find_run(slots).is_some()
    }

    /// Takes the first run of `slots` free slots.
    pub(crate) fn alloc(&mut self, slots: usize) -> Option<usize> {
        let index = self.free.find_run(slots)?;
        self.free.clear_range(index, slots);
        self.starts.set_range(index, 1);
        Some(self.base + index * self.slot_size)
    }

    /// Frees the slot at `addr`; false if it is not an allocated slot of this area.
    pub(crate) fn release(&mut self, addr: usize) -> bool {
        let Some(offset) = addr.checked_sub(self.base) else {
            return false;
        };
        let index = offset / self.slot_size;
        if !offset.is_multiple_of(self.slot_size)
            || index >= self.free.len()
            || !self.starts.get(index)
        {
            return false;
        }
        let len = self.free.len();
        let next_free = self.free.next_set(index).unwrap_or(len);
        let next_start = self.starts.next_set(index + 1).unwrap_or(len);
        let end = next_free.min(next_start);
        self.free.set_range(index, end - index);
        self.starts.clear_range(index, 1);
        true
    }

    /// The area's first byte and size.
    pub(crate) fn area(&self) -> (usize, usize) {
        (self.base, self.free.len() * self.slot_size)
    }

    pub(crate) fn is_exhausted(&self) -> bool {
        self.free.next_set(0).is_none()
    }

    pub(crate) fn in_use(&self) -> usize {
        self.free.len() - self.free.count_ones()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }
}
