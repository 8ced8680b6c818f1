//! Opening heap memory for writing and closing it again.
//!
//! Under `Protect` a page (or a large block's pages) is read-write while a write session or
//! a free is at work on it, and execute-read otherwise; the other strategies never change a
//! protection and only count these transitions as skipped. Whether memory is open is
//! recorded, not inferred from the sessions: if the OS refuses to close it, it stays open,
//! consistently recorded, and the next session or free on it opens nothing and tries the
//! close again.

use codeheap_virtual_alloc::{Os, Protection, WxStrategy};

use crate::block::{BlockRecord, Home};
use crate::error::Result;
use crate::heap::HeapCore;
use crate::page::PageId;
use crate::records::Place;
use crate::state::HeapState;

/// What opens and closes together: a small block's page, or a large block's pages (whose
/// address, extent and state its record, at the place given, holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    Page(PageId),
    Large(Place),
}

impl Span {
    /// The span of the block whose record is `record`, at `place`.
    pub(crate) fn of(record: &BlockRecord, place: Place) -> Span {
        match record.home {
            Home::Small { page, .. } => Span::Page(page),
            Home::Large => Span::Large(place),
        }
    }
}

/// The span's first address, pages, open sessions and whether it is open.
#[inline]
fn status(state: &HeapState, span: Span) -> (usize, usize, u32, bool) {
    match span {
        Span::Page(id) => {
            let page = state.pages.get(id);
            (page.addr, 1, u32::from(page.writers), page.open)
        }
        Span::Large(place) => {
            let record = state.blocks.at(place);
            let pages = state.large_pages(record);
            let writers = u32::from(record.large_writers);
            (record.addr, pages, writers, record.open)
        }
    }
}

/// Whether the span is open for writing: [`status`]'s last item, without a large block's
/// page count (a lookup in the map of large blocks) that every emit and free would pay for.
#[inline]
fn is_open(state: &HeapState, span: Span) -> bool {
    match span {
        Span::Page(id) => state.pages.get(id).open,
        Span::Large(place) => state.blocks.at(place).open,
    }
}

fn set_open(state: &mut HeapState, span: Span, open: bool) {
    match span {
        Span::Page(id) => state.pages.get_mut(id).open = open,
        Span::Large(place) => state.blocks.at_mut(place).open = open,
    }
}

/// Counts a write session opening (`+1`) or closing (`-1`) on the span.
pub(crate) fn adjust_writers(state: &mut HeapState, span: Span, delta: i32) {
    match span {
        Span::Page(id) => {
            let writers = &mut state.pages.get_mut(id).writers;
            *writers = writers
                .checked_add_signed(delta as i16)
                .expect("sessions balance");
        }
        Span::Large(place) => {
            let writers = &mut state.blocks.at_mut(place).large_writers;
            *writers = writers
                .checked_add_signed(delta as i8)
                .expect("sessions balance");
        }
    }
}

impl<O: Os> HeapCore<O> {
    /// Makes the span writable, unless it already is.
    pub(crate) fn open_span(&self, state: &mut HeapState, span: Span) -> Result<()> {
        let (addr, pages, _, open) = status(state, span);
        if !open {
            self.reprotect(
                state,
                addr,
                pages,
                Protection::ReadWrite,
                Protection::ExecuteRead,
            )?;
            set_open(state, span, true);
        }
        Ok(())
    }

    /// Runs `work`, a write that leaves no session behind, with the span open. Under
    /// `Protect` the span is opened first and closed after, unless a session holds it open;
    /// the other strategies change nothing and count the open and close a `Protect` heap
    /// would have made. Gives `work`'s result and the close's.
    ///
    /// Always inlined: every emit and every free runs it, and out of line (as the compiler
    /// leaves it) its closure and both results go through memory.
    #[inline(always)]
    pub(crate) fn with_span_open<R>(
        &self,
        state: &mut HeapState,
        span: Span,
        work: impl FnOnce(&mut HeapState) -> Result<R>,
    ) -> (Result<R>, Result<()>) {
        if self.strategy != WxStrategy::Protect {
            if !is_open(state, span) {
                state.counters.protect_skipped += 2;
            }
            return (work(state), Ok(()));
        }
        if let Err(err) = self.open_span(state, span) {
            return (Err(err), Ok(()));
        }
        let done = work(state);
        (done, self.close_span_if_idle(state, span))
    }

    /// Makes the span executable again if it is open and no session is at work on it. A
    /// refused close leaves it open (and recorded so) for the next close to retry.
    pub(crate) fn close_span_if_idle(&self, state: &mut HeapState, span: Span) -> Result<()> {
        let (addr, pages, writers, open) = status(state, span);
        if open && writers == 0 {
            self.reprotect(
                state,
                addr,
                pages,
                Protection::ExecuteRead,
                Protection::ReadWrite,
            )?;
            set_open(state, span, false);
        }
        Ok(())
    }
}
