//! Blocks with unwind information: an `.eh_frame` entry in the secondary area of the
//! block's segment, written and registered when the block is finalized, deregistered before
//! the block is freed (or decommitted, or the heap dropped, newest first).

use codeheap_page_allocator::{self as pages, SecondarySlot};
use codeheap_virtual_alloc::Os;
use codeheap_xdata::{EhFrameEntry, FrameDescription, WrittenEntry, write_entry};

use crate::block::Block;
use crate::config::SizeClasses;
use crate::error::{Error, Result};
use crate::heap::{Heap, HeapCore};
use crate::kept_large::KeptLarge;
use crate::page::{PageId, PageList};
use crate::state::HeapState;

/// A block's unwind entry: how its frame looks, where its entry goes, and the entry once
/// it is registered.
#[derive(Debug)]
pub(crate) struct UnwindRecord {
    frame: FrameDescription,
    slot: SecondarySlot,
    registered: Option<(WrittenEntry, u64)>,
}

impl UnwindRecord {
    pub(crate) fn new(frame: FrameDescription, slot: SecondarySlot) -> UnwindRecord {
        UnwindRecord {
            frame,
            slot,
            registered: None,
        }
    }
}

impl<O: Os> Heap<O> {
    /// Allocates a block whose code unwinds as `frame` describes: once the block is written
    /// (finalized), its `.eh_frame` entry is registered with the system unwinder, so panics,
    /// exceptions and backtraces cross its frames. The entry is deregistered before the block
    /// is freed. Fails with the builder's error if `frame` does not fit a `size`-byte
    /// function, and with `SecondaryTooLarge` if the entry exceeds a secondary area.
    pub fn alloc_with_unwind(&self, size: usize, frame: FrameDescription) -> Result<Block> {
        self.core.alloc_block(self.locked(), size, Some(frame))
    }

    /// The registered unwind entry of `block`, if it has one.
    pub fn unwind_entry(&self, block: &Block) -> Option<WrittenEntry> {
        self.core.unwind_entry(&self.state(), block)
    }
}

impl<O: Os> HeapCore<O> {
    /// The frame and the size of its entry, checked (outside the heap's lock: building an
    /// entry to size it is not free), for a block that asks for unwind information.
    /// Inlined: most blocks ask for none, and then it is a test of `frame`.
    #[inline]
    pub(crate) fn unwind_room(
        &self,
        frame: Option<FrameDescription>,
        size: usize,
    ) -> Result<Option<(FrameDescription, usize)>> {
        let Some(frame) = frame else {
            return Ok(None);
        };
        let bytes = self.entry_size(&frame, size)?;
        Ok(Some((frame, bytes)))
    }

    /// The size of `frame`'s entry, after checking it fits a `size`-byte function of this
    /// heap's architecture. Out of line, so that `unwind_room`'s test inlines alone.
    #[inline(never)]
    pub(crate) fn entry_size(&self, frame: &FrameDescription, size: usize) -> Result<usize> {
        if frame.arch() != self.arch {
            return Err(codeheap_xdata::Error::ArchMismatch {
                frame: frame.arch(),
                heap: self.arch,
            }
            .into());
        }
        // Built once, against the function's size (the rows must lie inside it); its length is
        // the same at any address (`EhFrameEntry::size_for`).
        Ok(EhFrameEntry::build(frame, 0, size as u64)?.bytes().len())
    }

    /// The newest kept freed block of `chunks` chunks, as (page, first chunk), if its
    /// segment has `bytes` of secondary area free, and those bytes. A kept block on a page
    /// already filed as having no room stays kept; one whose segment refuses goes back to
    /// its page, which is filed as having no room, as `page_with_unwind_room` files a page
    /// it was refused for: kept, it would be asked again by every block with an entry.
    pub(crate) fn kept_with_unwind_room(
        &self,
        state: &mut HeapState,
        chunks: usize,
        bytes: usize,
    ) -> Result<Option<(PageId, usize, SecondarySlot)>> {
        let Some((id, first)) = state.freed.take(chunks) else {
            return Ok(None);
        };
        let probed = match state.pages.get(id).list {
            PageList::NoUnwindRoom => Ok(None),
            _ => self.probe_secondary(state, id, bytes),
        };
        match probed {
            Ok(Some(slot)) => Ok(Some((id, first, slot))),
            Ok(None) if state.pages.get(id).list != PageList::NoUnwindRoom => {
                self.give_back_kept(state, id, first, chunks);
                let bucket = state.pages.get(id).bucket();
                state.pages.relist(id, PageList::NoUnwindRoom, bucket);
                Ok(None)
            }
            other => {
                // Not taken after all: kept again, in the place `take` just left.
                let kept_again = state.freed.keep(id, first, chunks);
                debug_assert!(kept_again);
                other.map(|_| None)
            }
        }
    }

    /// A page with room for `chunks` chunks of `bucket` whose segment has `bytes` of
    /// secondary area free, and those bytes: one of the bucket's pages (under
    /// `SizeClasses::Chunks`, or of a larger bucket's), a spare, or a new page from a
    /// segment with room.
    pub(crate) fn page_with_unwind_room(
        &self,
        state: &mut HeapState,
        bucket: usize,
        chunks: usize,
        bytes: usize,
    ) -> Result<(PageId, SecondarySlot)> {
        // Candidates newest first; one whose segment has no room moves to its bucket's
        // no-room list, so no page is refused twice until a freed entry gives room back.
        let candidate = |state: &HeapState| match self.classes {
            SizeClasses::PowerOfTwo => state.pages.buckets[bucket].last().copied(),
            SizeClasses::Chunks => state.pages.first_listed_from(chunks, false),
        };
        while let Some(id) = candidate(state) {
            match self.probe_secondary(state, id, bytes)? {
                Some(slot) => return Ok((id, slot)),
                None => {
                    let its_bucket = state.pages.get(id).bucket();
                    state.pages.relist(id, PageList::NoUnwindRoom, its_bucket);
                }
            }
        }
        // The spares (at most `SPARE_PAGES` but for pages the page allocator refused to
        // take back).
        for i in (0..state.pages.spare.len()).rev() {
            let id = state.pages.spare[i];
            if let Some(slot) = self.probe_secondary(state, id, bytes)? {
                let list = self.empty_page_list(bucket);
                state.pages.relist(id, PageList::Bucket, list);
                return Ok((id, slot));
            }
        }
        let acquired = self.acquire_pages(state, 1, Some(bytes))?;
        let slot = acquired.slot.expect("asked for");
        Ok((
            self.add_page(state, &acquired, self.empty_page_list(bucket)),
            slot,
        ))
    }

    /// The newest kept large block of `pages` pages and, for a block with an entry of
    /// `bytes`, a slot of its segment. A kept block whose segment has no room goes back to
    /// the page allocator (kept, it would be asked again by every block with an entry), or
    /// stays kept if that is refused.
    pub(crate) fn kept_large_for(
        &self,
        state: &mut HeapState,
        pages: usize,
        bytes: Option<usize>,
    ) -> Result<Option<(KeptLarge, Option<SecondarySlot>)>> {
        let Some(kept) = state.kept_large.take(pages) else {
            return Ok(None);
        };
        let Some(bytes) = bytes else {
            return Ok(Some((kept, None)));
        };
        match self.probe_secondary_at(state, kept.addr, bytes) {
            Ok(Some(slot)) => Ok(Some((kept, Some(slot)))),
            Ok(None) if self.pages.release_pages(kept.addr, kept.pages).is_ok() => {
                state.counters.pages_released += kept.pages as u64;
                Ok(None)
            }
            other => {
                // Taken a moment ago: its room is still there.
                state.kept_large.keep(kept);
                other.map(|_| None)
            }
        }
    }

    /// Asks the segment of page `id` for `bytes` of secondary area: the slot, or `None` if
    /// the segment has no room.
    fn probe_secondary(
        &self,
        state: &mut HeapState,
        id: PageId,
        bytes: usize,
    ) -> Result<Option<SecondarySlot>> {
        let addr = state.pages.get(id).addr;
        self.probe_secondary_at(state, addr, bytes)
    }

    /// Asks the segment holding `addr` for `bytes` of secondary area: the slot, or `None`
    /// if the segment has no room.
    fn probe_secondary_at(
        &self,
        state: &mut HeapState,
        addr: usize,
        bytes: usize,
    ) -> Result<Option<SecondarySlot>> {
        state.counters.secondary_probes += 1;
        match self.pages.alloc_secondary_bytes(addr, bytes) {
            Ok(slot) => Ok(Some(slot)),
            Err(pages::Error::SecondaryExhausted { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// At finalize: writes the block's entry into its slot and registers it, once.
    pub(crate) fn register_unwind(&self, state: &mut HeapState, block: &Block) -> Result<()> {
        // Most heaps have no block with unwind information: no hashing for them.
        if state.unwind.is_empty() {
            return Ok(());
        }
        let Some(record) = state.unwind.get(&block.addr) else {
            return Ok(());
        };
        if record.registered.is_some() {
            return Ok(());
        }
        let entry = EhFrameEntry::build(&record.frame, block.addr as u64, block.size as u64)?;
        let written = write_entry(self.vm(), &record.slot, &entry, block.addr, block.size)?;
        self.register_written(state, block.addr, written);
        Ok(())
    }

    /// Registers the entry just written into the slot of the block at `addr`.
    fn register_written(&self, state: &mut HeapState, addr: usize, written: WrittenEntry) {
        // SAFETY: the entry was just written into a slot that stays allocated, and its code
        // stays mapped, until the block is freed or decommitted, which deregisters it first.
        unsafe { self.registrar.register(written) };
        state.unwind_seq += 1;
        let seq = state.unwind_seq;
        let record = state.unwind.get_mut(&addr).expect("present");
        record.registered = Some((written, seq));
    }

    /// For shrinking the block at `addr` from `size` to `new_size` bytes: checks that its
    /// frame, if it has one, still fits the shorter function (its rows within it), and, if
    /// its entry is registered, gives the entries at both sizes, for
    /// [`reregister_unwind`](Self::reregister_unwind).
    pub(crate) fn unwind_for_shrink(
        &self,
        state: &HeapState,
        addr: usize,
        size: usize,
        new_size: usize,
    ) -> Result<Option<[EhFrameEntry; 2]>> {
        if state.unwind.is_empty() {
            return Ok(None);
        }
        let Some(record) = state.unwind.get(&addr) else {
            return Ok(None);
        };
        let shorter = EhFrameEntry::build(&record.frame, addr as u64, new_size as u64)?;
        if record.registered.is_none() {
            return Ok(None);
        }
        let current = EhFrameEntry::build(&record.frame, addr as u64, size as u64)?;
        Ok(Some([current, shorter]))
    }

    /// Replaces the registered entry of the block at `addr` (`size` bytes, about to be
    /// `new_size`) with `shorter`. If writing it is refused, `current` is written back and
    /// registered again: the block keeps its size and the entry that describes it.
    pub(crate) fn reregister_unwind(
        &self,
        state: &mut HeapState,
        addr: usize,
        [current, shorter]: [EhFrameEntry; 2],
        (size, new_size): (usize, usize),
    ) -> Result<()> {
        let slot = state.unwind.get(&addr).expect("checked").slot;
        self.deregister_unwind(state, addr);
        match write_entry(self.vm(), &slot, &shorter, addr, new_size) {
            Ok(written) => {
                self.register_written(state, addr, written);
                Ok(())
            }
            Err(err) => {
                if let Ok(written) = write_entry(self.vm(), &slot, &current, addr, size) {
                    self.register_written(state, addr, written);
                }
                Err(err.into())
            }
        }
    }

    /// Deregisters the entry of the block at `addr`, if it has a registered one.
    pub(crate) fn deregister_unwind(&self, state: &mut HeapState, addr: usize) {
        if state.unwind.is_empty() {
            return;
        }
        let registered = state
            .unwind
            .get_mut(&addr)
            .and_then(|r| r.registered.take());
        if let Some((entry, _)) = registered {
            // SAFETY: registered by `register_unwind` and not deregistered since.
            unsafe { self.registrar.deregister(entry) };
        }
    }

    /// Gives the slot of the block at `addr` back (after `deregister_unwind`), if it has
    /// one; whether it did.
    pub(crate) fn release_unwind_slot(&self, state: &mut HeapState, addr: usize) -> bool {
        if state.unwind.is_empty() {
            return false;
        }
        let Some(record) = state.unwind.remove(&addr) else {
            return false;
        };
        debug_assert!(record.registered.is_none(), "deregistered before release");
        // The slot was handed out by the page allocator and is released once.
        self.pages.release_secondary(record.slot.addr).is_ok()
    }

    /// Deregisters every registered entry, newest first (libgcc searches its registrations
    /// from the newest, so this order makes a mass teardown linear).
    pub(crate) fn deregister_all_unwind(&self, state: &mut HeapState) {
        let all: Vec<usize> = state.unwind.keys().copied().collect();
        self.deregister_unwind_newest_first(state, &all);
    }

    /// Deregisters the entries of the blocks at `addrs`, newest first.
    pub(crate) fn deregister_unwind_newest_first(&self, state: &mut HeapState, addrs: &[usize]) {
        if state.unwind.is_empty() {
            return;
        }
        let mut registered: Vec<(u64, usize)> = addrs
            .iter()
            .filter_map(|addr| Some((state.unwind.get(addr)?.registered?.1, *addr)))
            .collect();
        registered.sort_unstable_by(|a, b| b.cmp(a));
        for (_, addr) in registered {
            self.deregister_unwind(state, addr);
        }
    }

    /// [`Heap::unwind_entry`].
    pub(crate) fn unwind_entry(&self, state: &HeapState, block: &Block) -> Option<WrittenEntry> {
        let record = state.unwind.get(&block.addr)?;
        let live = (state.blocks.checked(block.place, block.id)).is_some();
        live.then_some(record.registered?.0)
    }
}

impl<O: Os> Drop for Heap<O> {
    fn drop(&mut self) {
        // The unwinder must forget every entry before the memory underneath is unmapped.
        self.core.deregister_all_unwind(&mut self.state());
    }
}

impl From<codeheap_xdata::Error> for Error {
    fn from(err: codeheap_xdata::Error) -> Error {
        match err {
            codeheap_xdata::Error::Vm(err) => Error::Vm(err),
            other => Error::Unwind(other),
        }
    }
}
