//! Write sessions: the only way code gets into a block.
//!
//! A session marks the block as being written (so it cannot be freed or written twice at
//! once), opens its pages under `Protect`, and puts the calling thread in write mode. The
//! caller's closure writes through a [`CodeWriter`], bounds-checked against the block, via
//! the region's writable view; the heap's lock is not held meanwhile, so other threads keep
//! allocating, freeing and running code. When the closure returns `Ok`, the icache is
//! flushed and the block finalized; its tail past `size` still holds the traps it was
//! allocated with (a partial instruction word right after the code is zeroed). On an error
//! or a panic the session is abandoned: the block is left unfinalized, its pages closed, and
//! the thread back in the mode it was in.
//!
//! An engine that assembles straight into the block asks for the most its function could
//! take and, once it knows, ends the block after what it wrote with
//! [`CodeWriter::truncate`]: the block is shrunk in place ([`Heap::shrink`]) before it is
//! finalized, and the rest of its room goes back.
//!
//! An engine that assembles into a buffer of its own hands the finished function to
//! [`Heap::emit_code`], which allocates, copies and finalizes under one hold of the lock:
//! the copy is bounded by the buffer, where a closure's work is not.

use core::marker::PhantomData;

use codeheap_virtual_alloc::sync::atomic::Ordering;
use codeheap_virtual_alloc::{Arch, Os, WriteScope};
use codeheap_xdata::FrameDescription;

use crate::block::{Block, BlockState, HandleKey};
use crate::books::Books;
use crate::error::{Error, Result};
use crate::heap::{Heap, HeapCore};
use crate::opening::{Span, adjust_writers};
use crate::records::Place;
use crate::size_class::SizeClass;
use crate::state::HeapState;

/// Writes into one block during a [`Heap::write`] session.
///
/// It is neither `Send` nor `Sync`: the session put this thread, and only this thread, in
/// write mode.
#[derive(Debug)]
pub struct CodeWriter<'a, O: Os> {
    os: &'a O,
    addr: usize,
    write_addr: usize,
    size: usize,
    _bound_to_thread: PhantomData<*const ()>,
}

static_assertions::assert_not_impl_any!(CodeWriter<'static, codeheap_virtual_alloc::sim::SimOs>: Send, Sync);

impl<O: Os> CodeWriter<'_, O> {
    /// Address of the block's first byte, where it runs from (for pc-relative code).
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Bytes that may be written.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Whether the block has no writable bytes (never: blocks have at least one).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The instruction set.
    pub fn arch(&self) -> Arch {
        self.os.arch()
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    // The block is the session's own: allocated, committed (not decommitted: sessions
    // refuse decommitted blocks, and `decommit_all` refuses while a session is open), its
    // pages open for writing (under `Protect`), the thread in write mode for the session's
    // whole length, and bounds checked. So bytes go straight to the block's writable view.

    /// Copies `bytes` to `offset` in the block; `OutOfBounds` past its end.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.check(offset, bytes.len())?;
        // SAFETY: in bounds of the session's block, which is writable by this thread (above).
        unsafe { self.os.write(self.write_addr + offset, bytes) }?;
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `pattern` repeated.
    pub fn fill(&mut self, offset: usize, len: usize, pattern: &[u8]) -> Result<()> {
        self.check(offset, len)?;
        // SAFETY: in bounds of the session's block, which is writable by this thread (above).
        unsafe { self.os.fill(self.write_addr + offset, len, pattern) }?;
        Ok(())
    }

    /// Ends the block after its first `len` bytes, for code that came out shorter than the
    /// room it was given: when the session finishes, the block is shrunk to `len`
    /// ([`Heap::shrink`]) before it is finalized, and from now on writes past `len` are
    /// refused. A `len` at or past the current length changes nothing; 0 is refused
    /// (`ZeroSize`). Should the shrink fail, the session fails with its error.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::ZeroSize);
        }
        self.size = self.size.min(len);
        Ok(())
    }

    /// Reads back `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: in bounds of the session's block, whose writable view is readable.
        unsafe { self.os.read(self.write_addr + offset, buf) }?;
        Ok(())
    }
}

/// Ends a session that did not finish: whatever happened, the block is left unfinalized
/// and its pages closed, and, for a block allocated for the session, freed again.
struct Abandon<'a, O: Os, B: Books> {
    core: &'a HeapCore<O>,
    books: B,
    place: Place,
    addr: usize,
    /// The session is still open.
    open: bool,
    /// The block goes back if the session does not finish: it was allocated for it.
    discard: Option<HandleKey>,
}

impl<O: Os, B: Books> Drop for Abandon<'_, O, B> {
    fn drop(&mut self) {
        if !self.open && self.discard.is_none() {
            return;
        }
        let mut state = self.books.books();
        if self.open {
            let _ = (self.core).end_session(&mut state, self.place, BlockState::Fresh);
        }
        if let Some(key) = self.discard {
            let _ = self.core.free_checked(&mut state, self.addr, Some(key));
        }
    }
}

impl<O: Os> Heap<O> {
    /// Writes the block through `emit`, then flushes the icache and finalizes it (the tail
    /// past `size` holds traps). The calling thread is in write mode during `emit` and back
    /// in its previous mode afterwards, even if `emit` fails or panics (the block is then
    /// left unfinalized). A finalized block can be written again (patched).
    pub fn write<R>(
        &self,
        block: &mut Block,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<R> {
        self.core.write(self.locked(), block, emit)
    }

    /// Allocates a block of `size` bytes and writes it through `emit` (as
    /// [`alloc`](Heap::alloc) then [`write`](Heap::write), asmjit's `JitRuntime::add`), in
    /// one trip through the heap's lock fewer. All or nothing: if `emit` fails or panics the
    /// block is freed again and only the error comes back. (Should the OS refuse to take it
    /// back, which only a failing `mprotect` under `Protect` or a failing page release can
    /// cause, it stays allocated and unfinalized, so never runnable, counted in
    /// `stats().live_blocks`, until the heap is dropped.)
    pub fn emit<R>(
        &self,
        size: usize,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<(Block, R)> {
        self.core.emit_block(self.locked(), size, None, emit)
    }

    /// [`emit`](Heap::emit) for a block whose code unwinds as `frame` describes (as
    /// [`alloc_with_unwind`](Heap::alloc_with_unwind) then [`write`](Heap::write)): its
    /// unwind entry is registered when it is finalized. All or nothing, slot included.
    pub fn emit_with_unwind<R>(
        &self,
        size: usize,
        frame: FrameDescription,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<(Block, R)> {
        self.core.emit_block(self.locked(), size, Some(frame), emit)
    }

    /// Allocates a block holding `code`, a finished function (as engines that assemble
    /// into a buffer of their own have), finalized and ready to run: [`emit`](Heap::emit)
    /// without a closure. The copy is bounded by `code`, so it is made under the same hold
    /// of the heap's lock as the allocation and the finalization (one trip through the lock,
    /// no session for another thread to see). All or nothing: on an error the block is
    /// freed again and only the error comes back.
    pub fn emit_code(&self, code: &[u8]) -> Result<Block> {
        self.core.emit_code_block(self.locked(), code, None)
    }

    /// [`emit_code`](Heap::emit_code) of a function whose code unwinds as `frame` describes
    /// (as [`alloc_with_unwind`](Heap::alloc_with_unwind) then [`write`](Heap::write)): its
    /// unwind entry is written and registered under the same hold of the lock. All or
    /// nothing, slot and registration included.
    pub fn emit_code_with_unwind(&self, code: &[u8], frame: FrameDescription) -> Result<Block> {
        self.core.emit_code_block(self.locked(), code, Some(frame))
    }
}

impl<O: Os> HeapCore<O> {
    /// [`Heap::write`].
    pub(crate) fn write<R>(
        &self,
        mut books: impl Books,
        block: &mut Block,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<R> {
        block.published = 0;
        let write_addr = self.begin_session(&mut books.books(), block)?;
        self.run_session(books, block, write_addr, None, emit)
    }

    /// [`Heap::emit`] (with `frame`, [`Heap::emit_with_unwind`]).
    pub(crate) fn emit_block<R>(
        &self,
        mut books: impl Books,
        size: usize,
        frame: Option<FrameDescription>,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<(Block, R)> {
        let class = SizeClass::of(size, self.page, self.classes)?;
        let unwind = self.unwind_room(frame, size)?;
        let (mut block, write_addr) = {
            let mut state = books.books();
            let block = self.place_block(&mut state, size, class, unwind)?;
            match self.begin_session(&mut state, &block) {
                Ok(write_addr) => (block, write_addr),
                Err(err) => {
                    let _ = self.free_checked(&mut state, block.addr, Some(block.key()));
                    return Err(err);
                }
            }
        };
        let key = Some(block.key());
        let value = self.run_session(books, &mut block, write_addr, key, emit)?;
        Ok((block, value))
    }

    /// Runs `emit` on a block whose session is open, then finalizes it. If anything fails,
    /// the block whose key is `discard` is freed again.
    fn run_session<R>(
        &self,
        books: impl Books,
        block: &mut Block,
        write_addr: usize,
        discard: Option<HandleKey>,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<R> {
        let mut abandon = Abandon {
            core: self,
            books,
            place: block.place,
            addr: block.addr,
            open: true,
            discard,
        };
        let _write = WriteScope::enter();
        let mut writer = CodeWriter {
            os: self.vm().os(),
            addr: block.addr,
            write_addr,
            size: block.size,
            _bound_to_thread: PhantomData,
        };
        let value = emit(&mut writer)?;
        let mut state = abandon.books.books();
        if writer.size < block.size {
            // The session's own block: live and being written until the session ends.
            self.shrink_locked(&mut state, block, block.place, writer.size)?;
        }
        self.seal(&mut state, block, write_addr)?;
        self.register_unwind(&mut state, block)?;
        abandon.open = false;
        self.end_session(&mut state, block.place, BlockState::Finalized)?;
        abandon.discard = None;
        block.published = self.epoch.load(Ordering::Acquire);
        Ok(value)
    }

    /// What makes written code runnable, the session still open: past `size` the block
    /// holds the traps it was allocated with (nothing can write there), so only a partial
    /// instruction word after the code is zeroed; then the icache is flushed.
    #[inline]
    fn seal(&self, state: &mut HeapState, block: &Block, write_addr: usize) -> Result<()> {
        let align = self.arch.instruction_alignment();
        let partial = block.size.next_multiple_of(align).min(block.capacity) - block.size;
        if partial > 0 {
            self.seal_partial_word(state, block, write_addr, partial)?;
        }
        // SAFETY: the block's bytes are committed and readable (its session is open).
        unsafe { self.vm().os().flush_icache(block.addr, block.size) }?;
        state.counters.icache_flushes += 1;
        Ok(())
    }

    /// Zeroes the `partial` bytes of the instruction word the code ends in. Cold, and out of
    /// line so that `seal` inlines: never on x86-64 (its instructions align to a byte), and
    /// on aarch64 only for code that is not a whole number of instructions.
    #[cold]
    fn seal_partial_word(
        &self,
        state: &mut HeapState,
        block: &Block,
        write_addr: usize,
        partial: usize,
    ) -> Result<()> {
        let (addr, write_addr) = (block.addr + block.size, write_addr + block.size);
        self.fill_traps(state, addr, write_addr, partial)
    }

    /// [`Heap::emit_code`] (with `frame`, [`Heap::emit_code_with_unwind`]).
    ///
    /// Always inlined (into those two and the exclusive view's): out of line, as the
    /// compiler leaves it, the block comes back through memory on every emit.
    #[inline(always)]
    pub(crate) fn emit_code_block(
        &self,
        mut books: impl Books,
        code: &[u8],
        frame: Option<FrameDescription>,
    ) -> Result<Block> {
        let class = SizeClass::of(code.len(), self.page, self.classes)?;
        let unwind = self.unwind_room(frame, code.len())?;
        let registers = unwind.is_some();
        let mut state = books.books();
        let mut block = self.place_block(&mut state, code.len(), class, unwind)?;
        let mut done = self.copy_in(&mut state, &block, code);
        if registers && done.is_ok() {
            done = self.register_unwind(&mut state, &block);
        }
        match done {
            Ok(()) => {
                block.published = self.epoch.load(Ordering::Acquire);
                Ok(block)
            }
            Err(err) => {
                let _ = self.free_checked(&mut state, block.addr, Some(block.key()));
                Err(err)
            }
        }
    }

    /// Writes `code` into a fresh block and finalizes it, the heap's lock held throughout.
    /// No other thread can see the block until this returns, so no session is recorded: its
    /// span is opened around the copy and closed again unless another thread's session is
    /// at work on it.
    ///
    /// Always inlined into its one caller, `emit_code_block`, which the compiler would
    /// otherwise not do: every emit would pass the block and the results through memory.
    #[inline(always)]
    fn copy_in(&self, state: &mut HeapState, block: &Block, code: &[u8]) -> Result<()> {
        let record = *state.blocks.at(block.place);
        let write_addr = self.write_addr_of(state, &record)?;
        let span = Span::of(&record, block.place);
        let (copied, closed) = self.with_span_open(state, span, |state| {
            let _write = WriteScope::enter();
            // SAFETY: the block was just placed and is seen by no one else (the lock is
            // held): allocated, committed, its pages open for writing, this thread in write
            // mode, and `code` exactly its size.
            unsafe { self.vm().os().write(write_addr, code) }
                .map_err(Error::from)
                .and_then(|()| self.seal(state, block, write_addr))
        });
        copied.and(closed)?;
        state.blocks.at_mut(block.place).state = BlockState::Finalized;
        Ok(())
    }

    /// Opens a session on `block` and returns where it is written.
    fn begin_session(&self, state: &mut HeapState, block: &Block) -> Result<usize> {
        let addr = block.addr;
        let place = self.locate(state, addr, Some(block.key()))?;
        let record = state.blocks.at_mut(place);
        let before = record.state;
        match before {
            BlockState::Writing => return Err(Error::BlockBusy { addr }),
            BlockState::Parked => return Err(Error::Decommitted { addr }),
            BlockState::Fresh | BlockState::Finalized => {}
        }
        // Marked first, so the common path looks the record up once.
        record.state = BlockState::Writing;
        let record = *record;
        let span = Span::of(&record, place);
        let opened = self.write_addr_of(state, &record).and_then(|write_addr| {
            self.open_span(state, span)?;
            Ok(write_addr)
        });
        let write_addr = match opened {
            Ok(write_addr) => write_addr,
            Err(err) => {
                state.blocks.at_mut(place).state = before;
                return Err(err);
            }
        };
        adjust_writers(state, span, 1);
        Ok(write_addr)
    }

    /// Closes a session on the block whose record is at `place`: the block takes `outcome`,
    /// and its pages close once no session has them open. If the OS refuses the close, the
    /// pages stay open (recorded so) and the block is left unfinalized: its code cannot run
    /// from a page that is not executable.
    pub(crate) fn end_session(
        &self,
        state: &mut HeapState,
        place: Place,
        outcome: BlockState,
    ) -> Result<()> {
        let record = state.blocks.at_mut(place);
        record.state = outcome;
        let span = Span::of(record, place);
        adjust_writers(state, span, -1);
        let closed = self.close_span_if_idle(state, span);
        if closed.is_err() {
            state.blocks.at_mut(place).state = BlockState::Fresh;
        }
        closed
    }
}
