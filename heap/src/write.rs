//! Write sessions: the only way code gets into a block.
//!
//! A session marks the block as being written (so it cannot be freed or written twice at
//! once), opens its pages under `Protect`, and puts the calling thread in write mode. The
//! caller's closure writes through a [`CodeWriter`], bounds-checked against the block, via
//! the region's writable view; the heap's lock is not held meanwhile, so other threads keep
//! allocating, freeing and running code. When the closure returns `Ok`, the block's tail is
//! padded with traps, the icache flushed and the block finalized. On an error or a panic
//! the session is abandoned: the block is left unfinalized, its pages closed, and the
//! thread back in the mode it was in.

use codeheap_virtual_alloc::{Arch, Os, VirtualAlloc, WriteScope};

use crate::block::{Block, BlockState, Home};
use crate::error::{Error, Result};
use crate::heap::Heap;
use crate::state::HeapState;

/// Writes into one block during a [`Heap::write`] session.
#[derive(Debug)]
pub struct CodeWriter<'a, O: Os> {
    vm: &'a VirtualAlloc<O>,
    addr: usize,
    size: usize,
}

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
        self.vm.arch()
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

    /// Copies `bytes` to `offset` in the block; `OutOfBounds` past its end.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.check(offset, bytes.len())?;
        if !bytes.is_empty() {
            self.vm.write(self.addr + offset, bytes)?;
        }
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `pattern` repeated.
    pub fn fill(&mut self, offset: usize, len: usize, pattern: &[u8]) -> Result<()> {
        self.check(offset, len)?;
        if len > 0 {
            self.vm.fill(self.addr + offset, len, pattern)?;
        }
        Ok(())
    }

    /// Reads back `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        if !buf.is_empty() {
            self.vm.read(self.addr + offset, buf)?;
        }
        Ok(())
    }
}

/// Ends a session that did not finish: whatever happened, the block is left unfinalized
/// and its pages closed.
struct Abandon<'a, O: Os> {
    heap: &'a Heap<O>,
    addr: usize,
    armed: bool,
}

impl<O: Os> Drop for Abandon<'_, O> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.heap.state();
            let _ = self
                .heap
                .end_session(&mut state, self.addr, BlockState::Fresh);
        }
    }
}

impl<O: Os> Heap<O> {
    /// Writes the block through `emit`, then pads its tail with traps, flushes the icache
    /// and finalizes it. The calling thread is in write mode during `emit` and back in its
    /// previous mode afterwards, even if `emit` fails or panics (the block is then left
    /// unfinalized). A finalized block can be written again (patched).
    pub fn write<R>(
        &self,
        block: &mut Block,
        emit: impl FnOnce(&mut CodeWriter<'_, O>) -> Result<R>,
    ) -> Result<R> {
        self.begin_session(block)?;
        let mut abandon = Abandon {
            heap: self,
            addr: block.addr,
            armed: true,
        };
        let _write = WriteScope::enter();
        let mut writer = CodeWriter {
            vm: self.vm(),
            addr: block.addr,
            size: block.size,
        };
        let value = emit(&mut writer)?;
        let tail = block.capacity - block.size;
        let mut state = self.state();
        if tail > 0 {
            self.fill_traps(&mut state, block.addr + block.size, tail)?;
        }
        self.vm().flush_instruction_cache(block.addr, block.size)?;
        state.counters.icache_flushes += 1;
        self.register_unwind(&mut state, block)?;
        abandon.armed = false;
        self.end_session(&mut state, block.addr, BlockState::Finalized)?;
        Ok(value)
    }

    fn begin_session(&self, block: &Block) -> Result<()> {
        let mut state = self.state();
        let record = self.record(&state, block.addr, Some(block.id))?;
        match record.state {
            BlockState::Writing => return Err(Error::BlockBusy { addr: block.addr }),
            BlockState::Parked => return Err(Error::Decommitted { addr: block.addr }),
            BlockState::Fresh | BlockState::Finalized => {}
        }
        let (page_addr, pages, writers) = session_pages(&state, block.addr, record.home);
        if writers == 0 {
            self.open_pages(&mut state, page_addr, pages)?;
        }
        adjust_writers(&mut state, block.addr, record.home, 1);
        state.blocks.get_mut(&block.addr).expect("live").state = BlockState::Writing;
        Ok(())
    }

    /// Closes a session: the block takes `outcome`, and its pages close once no session has
    /// them open.
    pub(crate) fn end_session(
        &self,
        state: &mut HeapState,
        addr: usize,
        outcome: BlockState,
    ) -> Result<()> {
        let home = state.blocks[&addr].home;
        adjust_writers(state, addr, home, -1);
        state.blocks.get_mut(&addr).expect("live").state = outcome;
        let (page_addr, pages, writers) = session_pages(state, addr, home);
        if writers == 0 {
            self.close_pages(state, page_addr, pages)?;
        }
        Ok(())
    }
}

/// The pages a block's session opens, and how many sessions have them open now.
fn session_pages(state: &HeapState, addr: usize, home: Home) -> (usize, usize, u32) {
    match home {
        Home::Small { page, .. } => {
            let page = state.pages.get(page);
            (page.addr, 1, page.writers)
        }
        Home::Large { pages } => (addr, pages, state.blocks[&addr].large_writers),
    }
}

fn adjust_writers(state: &mut HeapState, addr: usize, home: Home, delta: i32) {
    let writers = match home {
        Home::Small { page, .. } => &mut state.pages.get_mut(page).writers,
        Home::Large { .. } => &mut state.blocks.get_mut(&addr).expect("live").large_writers,
    };
    *writers = writers.checked_add_signed(delta).expect("sessions balance");
}
