//! Patching live code: one aligned store into a finalized block that other threads may be
//! running (an inline cache's guard or target, a call or branch relinked, a breakpoint
//! set), the block finalized and runnable throughout. A write session cannot do this: it
//! unpublishes the block while it is open, and its copy may reach memory in any pieces.

use codeheap_virtual_alloc::{Arch, Os, Word, WriteScope};

use crate::block::{Block, BlockState};
use crate::error::{Error, Result};
use crate::heap::Heap;
use crate::opening::Span;

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
        let addr = block.addr;
        let word = Self::patch_word(self.arch, addr, offset, bytes)?;
        let mut state = self.state();
        let place = self.locate(&state, addr, Some(block.key()))?;
        let record = *state.blocks.at(place);
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
        let write_addr = self.write_addr_of(&state, &record)? + offset;
        let span = Span::of(&record, place);
        let (stored, closed) = self.with_span_open(&mut state, span, |state| {
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

    /// The one store `bytes` at `offset` of the block at `addr` can be made with.
    fn patch_word(arch: Arch, addr: usize, offset: usize, bytes: &[u8]) -> Result<Word> {
        let one_store = |word: &Word| {
            let whole_instructions = word.len() >= arch.instruction_alignment();
            whole_instructions && addr.wrapping_add(offset).is_multiple_of(word.len())
        };
        Word::from_bytes(bytes)
            .filter(one_store)
            .ok_or(Error::PatchNotAtomic {
                offset,
                len: bytes.len(),
            })
    }
}
