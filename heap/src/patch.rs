//! Patching live code: one aligned store into a finalized block that other threads may be
//! running (an inline cache's guard or target, a call or branch relinked, a breakpoint
//! set), the block finalized and runnable throughout. A write session cannot do this: it
//! unpublishes the block while it is open, and its copy may reach memory in any pieces.

use codeheap_virtual_alloc::{Arch, Os, Word, WriteScope};

use crate::block::{Block, BlockState};
use crate::books::Books;
use crate::error::{Error, Result};
use crate::heap::{Heap, HeapCore};
use crate::opening::Span;
use crate::records::Place;
use crate::state::HeapState;

impl<O: Os> Heap<O> {
    /// Writes `bytes` at `offset` into a finalized block with one store, then flushes the
    /// icache for them, under the heap's lock. A thread running the block meanwhile runs
    /// the old bytes or the new, never a mix, and runs the new ones once the flush has
    /// reached it; the block's entry point, unwind entry and everything else stay as they
    /// were. On aarch64 the architecture lets a running thread see such a patch only
    /// between `B`, `BL`, `NOP`, `BRK` and a few other instructions (a branch retargeted, a
    /// breakpoint set or cleared); data the code loads can be anything.
    ///
    /// A patch is 1, 2, 4 or 8 bytes at an offset that is a multiple of their count (4 or
    /// 8 on aarch64, whose instructions are words); anything else fails with
    /// `PatchNotAtomic`. Longer rewrites of code no thread runs meanwhile go through
    /// [`write`](Heap::write). Under `Protect` the block's pages are made writable for the
    /// store, as for any write, and a thread running code on them then faults: live patching
    /// needs `MapJit`, `DualMap` or `Rwx`.
    ///
    /// Fails with `OutOfBounds` past the block's size, `NotFinalized` before its first
    /// session ends, `Decommitted` after `decommit_all` and `StaleBlock` for a handle freed
    /// by address; none of them writes anything. Should the OS refuse to make the pages
    /// executable again (`Protect`), the patch is made and the error returned; the pages
    /// stay open, recorded so, until the next session or free on them closes them.
    pub fn patch(&self, block: &Block, offset: usize, bytes: &[u8]) -> Result<()> {
        self.core.patch(self.locked(), block, offset, bytes)
    }

    /// [`patch`](Heap::patch) at `addr`, anywhere in a live block found by its address (as
    /// [`free_address`](Heap::free_address) is to [`free`](Heap::free)), for an engine that
    /// keeps the address of what it patches (a call site, a guard) rather than the block's
    /// handle. Fails with `NotAllocated` for an address of the heap's memory that no live
    /// block holds and `NotFromHeap` for one outside it, and as `patch` does.
    pub fn patch_address(&self, addr: usize, bytes: &[u8]) -> Result<()> {
        self.core.patch_address(self.locked(), addr, bytes)
    }
}

impl<O: Os> HeapCore<O> {
    /// [`Heap::patch`].
    pub(crate) fn patch(
        &self,
        mut books: impl Books,
        block: &Block,
        offset: usize,
        bytes: &[u8],
    ) -> Result<()> {
        let word = Self::patch_word(self.arch, block.addr.wrapping_add(offset), offset, bytes)?;
        let mut state = books.books();
        let place = self.locate(&state, block.addr, Some(block.key()))?;
        self.patch_locked(&mut state, place, offset, word)
    }

    /// [`Heap::patch_address`].
    pub(crate) fn patch_address(
        &self,
        mut books: impl Books,
        addr: usize,
        bytes: &[u8],
    ) -> Result<()> {
        let mut state = books.books();
        let Some(block) = self.find_in(&state, addr) else {
            return Err(self.why_not_a_block(&state, addr));
        };
        let offset = addr - block.addr;
        let word = Self::patch_word(self.arch, addr, offset, bytes)?;
        let place = self.locate(&state, block.addr, None)?;
        self.patch_locked(&mut state, place, offset, word)
    }

    /// Stores `word` at `offset` of the block whose record is at `place`, once the block and
    /// the range are checked.
    fn patch_locked(
        &self,
        state: &mut HeapState,
        place: Place,
        offset: usize,
        word: Word,
    ) -> Result<()> {
        let record = *state.blocks.at(place);
        let addr = record.addr;
        match record.state {
            BlockState::Finalized => {}
            BlockState::Fresh => return Err(Error::NotFinalized { addr }),
            BlockState::Writing => return Err(Error::BlockBusy { addr }),
            BlockState::Parked => return Err(Error::Decommitted { addr }),
        }
        let size = record.size as usize;
        if offset.checked_add(word.len()).is_none_or(|end| end > size) {
            return Err(Error::OutOfBounds {
                offset,
                len: word.len(),
                size,
            });
        }
        let write_addr = self.write_addr_of(state, &record)? + offset;
        let span = Span::of(&record, place);
        let (stored, closed) = self.with_span_open(state, span, |state| {
            let _write = WriteScope::enter();
            let os = self.vm().os();
            // SAFETY: the block is live and finalized (checked under the lock, which is held
            // throughout, so nothing frees, moves or decommits it), the word lies within its
            // size, its pages are open for writing and this thread is in write mode; only
            // the heap writes through the writable view, so no reference aliases it.
            unsafe {
                os.store(write_addr, word)?;
                os.flush_icache(addr + offset, word.len())?;
            }
            state.counters.patches += 1;
            state.counters.icache_flushes += 1;
            Ok(())
        });
        stored.and(closed)
    }

    /// The one store `bytes` at `at` (`offset` into its block) can be made with.
    fn patch_word(arch: Arch, at: usize, offset: usize, bytes: &[u8]) -> Result<Word> {
        let one_store = |word: &Word| {
            let whole_instructions = word.len() >= arch.instruction_alignment();
            whole_instructions && at.is_multiple_of(word.len())
        };
        Word::from_bytes(bytes)
            .filter(one_store)
            .ok_or(Error::PatchNotAtomic {
                offset,
                len: bytes.len(),
            })
    }
}
