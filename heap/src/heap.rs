//! [`Heap`]: ChakraCore's `CustomHeap::Heap`, with the W^X discipline of the layers below.

use codeheap_page_allocator::bitmap::Bits;
use codeheap_page_allocator::{PageAllocator, PageRun, SecondarySlot};
use codeheap_virtual_alloc::sync::atomic::{AtomicU64, Ordering};
use codeheap_virtual_alloc::sync::{Mutex, MutexGuard, lock};
use codeheap_virtual_alloc::{
    Arch, Os, Protection, ThreadMode, VirtualAlloc, WriteScope, WxStrategy, require_mode,
};
use codeheap_xdata::{FrameDescription, RecordingRegistrar, Registrar, SystemRegistrar};
use core::sync::atomic::AtomicU64 as IdCounter;
use std::sync::Arc;

use crate::block::{Block, BlockInfo, BlockRecord, BlockState, HandleKey, Home};
use crate::books::{Books, Locked};
use crate::config::{HeapConfig, SPARE_PAGES, SizeClasses};
use crate::error::{Error, Result};
use crate::exclusive::Exclusive;
use crate::kept_large::KeptLarge;
use crate::opening::Span;
use crate::own_line::OwnLine;
use crate::page::{MAX_CHUNKS, Page, PageId, PageList};
use crate::records::Place;
use crate::size_class::{CHUNK, SizeClass, bucket_count, bucket_of, list_count};
use crate::state::{HeapState, LargeBlock};
use crate::stats::{BucketStats, HeapStats};
use crate::unwind::UnwindRecord;

/// Pages just taken from the page allocator and prepared.
pub(crate) struct Acquired {
    pub(crate) run: PageRun,
    /// Secondary-area bytes taken with them, if asked for.
    pub(crate) slot: Option<SecondarySlot>,
}

/// Block ids, unique in the process, so a stale or foreign handle never matches a record.
/// Heaps take them in batches (see [`HeapState::next_block_id`]).
static NEXT_BLOCK_ID: IdCounter = IdCounter::new(1);

/// Ids a heap takes from [`NEXT_BLOCK_ID`] at a time: one atomic add per this many
/// allocations instead of one each.
const BLOCK_ID_BATCH: u64 = 1 << 16;

/// A batch of [`BLOCK_ID_BATCH`] ids that no other heap holds.
fn take_id_batch() -> core::ops::Range<u64> {
    let first = NEXT_BLOCK_ID.fetch_add(BLOCK_ID_BATCH, Ordering::Relaxed);
    first..first + BLOCK_ID_BATCH
}

/// An executable-memory heap for a JIT compiler.
///
/// * **Small blocks** (up to a page) come from buckets of 128-byte chunks, one per power of
///   two up to the page size: 128 B … 4 KiB on 4 KiB pages, … 16 KiB on Apple Silicon's
///   16 KiB pages. Requests are rounded up to a power of two (or, with
///   [`SizeClasses::Chunks`], to whole chunks, placed best fit); a page can be split off a
///   larger bucket; full pages are kept apart; a page left empty goes back to the page
///   allocator ([`SPARE_PAGES`] are kept, so alternating alloc/free does not go down and
///   back up through it).
/// * **Large blocks** get whole pages of their own.
/// * **Traps**: new pages, freed blocks and the unused tail of every finalized block hold
///   the architecture's trap (`int3`, or `BRK #0xF000` with partial words zeroed), so a
///   stale or wild entry point traps instead of running leftover code.
/// * **W^X**: pages are executable whenever no write is in progress. Under `Protect` a page
///   is flipped to read-write only while a block on it is written or freed, never to RWX;
///   under `MapJit` and `DualMap` no protection ever changes.
/// * **Threads**: `Send + Sync`. Writing happens outside the heap's lock, in the writer's
///   write mode, so a background compiler (even one in permanent write mode) writes blocks
///   while other threads run blocks on the same pages.
///
/// Write a block with [`write`](Heap::write), which finalizes it; then get its entry point
/// ([`entry_point`](Heap::entry_point), [`function`](Heap::function)) on a thread in execute
/// mode; free it with [`free`](Heap::free) (or [`free_address`](Heap::free_address)).
///
/// A heap one thread owns can go around the lock: [`exclusive`](Heap::exclusive).
#[derive(Debug)]
pub struct Heap<O: Os> {
    pub(crate) core: HeapCore<O>,
    state: Mutex<HeapState>,
}

/// Everything of a heap but its bookkeeping: the layers below, its settings and the epoch,
/// which need no lock of the heap's. Operations live here and take the bookkeeping as
/// [`Books`], so that a [`Heap`] runs them under its lock and an [`Exclusive`] without.
#[derive(Debug)]
pub(crate) struct HeapCore<O: Os> {
    pub(crate) pages: PageAllocator<O>,
    pub(crate) page: usize,
    pub(crate) arch: Arch,
    pub(crate) strategy: WxStrategy,
    pub(crate) classes: SizeClasses,
    pub(crate) registrar: Arc<dyn Registrar>,
    /// Bumped (under the lock) whenever a block changes other than through its handle:
    /// `free_address` and `decommit_all`. Handles remember the epoch they saw their block
    /// finalized in; see [`Block::published`].
    pub(crate) epoch: OwnLine<AtomicU64>,
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
impl Heap<codeheap_virtual_alloc::NativeOs> {
    /// A heap on this machine with the platform's default strategy.
    pub fn new() -> Result<Self> {
        Heap::with_config(
            codeheap_virtual_alloc::NativeOs::new(),
            HeapConfig::default(),
        )
    }

    /// A heap on this machine with `strategy`.
    pub fn with_strategy(strategy: WxStrategy) -> Result<Self> {
        let config = HeapConfig::with_strategy(strategy);
        Heap::with_config(codeheap_virtual_alloc::NativeOs::new(), config)
    }
}

impl<O: Os> Heap<O> {
    /// A heap on `os` (the real one, or the simulator) with `config`. Unwind entries go to
    /// the process's unwinder on a real OS and to a [`RecordingRegistrar`] on the simulator.
    pub fn with_config(os: O, config: HeapConfig) -> Result<Self> {
        let registrar: Arc<dyn Registrar> = if os.is_simulated() {
            Arc::new(RecordingRegistrar::new())
        } else {
            Arc::new(SystemRegistrar::new())
        };
        Heap::with_registrar(os, config, registrar)
    }

    /// A heap whose unwind entries go to `registrar`.
    pub fn with_registrar(
        os: O,
        config: HeapConfig,
        registrar: Arc<dyn Registrar>,
    ) -> Result<Self> {
        let vm = match (config.code_range, config.strategy) {
            (Some(range), strategy) => VirtualAlloc::with_code_range(os, strategy, range)?,
            (None, Some(strategy)) => VirtualAlloc::with_strategy(os, strategy)?,
            (None, None) => VirtualAlloc::new(os),
        };
        let page = vm.page_size();
        if !(CHUNK..=MAX_CHUNKS * CHUNK).contains(&page) {
            return Err(Error::InvalidConfig {
                reason: "pages must be between 128 bytes and 64 KiB",
            });
        }
        let (arch, strategy) = (vm.arch(), vm.strategy());
        Ok(Heap {
            core: HeapCore {
                pages: PageAllocator::new(vm, config.pages)?,
                page,
                arch,
                strategy,
                classes: config.size_classes,
                registrar,
                epoch: OwnLine(AtomicU64::new(1)),
            },
            state: Mutex::new(HeapState::new(
                list_count(config.size_classes, page),
                page / CHUNK,
                config.keep_freed_blocks,
            )),
        })
    }

    /// The heap's operations without its lock, for a heap this thread owns: `&mut self`
    /// proves no other thread can reach the heap while the view lives, so nothing needs
    /// to synchronise, and an allocation, an emit or a free costs no atomic instruction.
    /// What the view writes and frees, the heap has afterwards as if done through it.
    pub fn exclusive(&mut self) -> Exclusive<'_, O> {
        // Poisoning is ignored, as by every lock of the heap's (`sync::lock`).
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Exclusive::new(&self.core, state)
    }

    /// The bookkeeping, reached through the lock at each hold.
    pub(crate) fn locked(&self) -> Locked<'_> {
        Locked(&self.state)
    }

    /// The bookkeeping, locked.
    pub(crate) fn state(&self) -> MutexGuard<'_, HeapState> {
        lock(&self.state)
    }

    /// The OS layer: for queries, and for engines that write through raw pointers.
    pub fn vm(&self) -> &VirtualAlloc<O> {
        self.core.vm()
    }

    /// The page allocator underneath.
    pub fn page_allocator(&self) -> &PageAllocator<O> {
        &self.core.pages
    }

    /// The W^X strategy of the heap's memory.
    pub fn strategy(&self) -> WxStrategy {
        self.core.strategy
    }

    /// The instruction set its code runs as.
    pub fn arch(&self) -> Arch {
        self.core.arch
    }

    /// How small requests are rounded.
    pub fn size_classes(&self) -> SizeClasses {
        self.core.classes
    }

    /// The page size: the largest small block.
    pub fn page_size(&self) -> usize {
        self.core.page
    }

    /// The span every block lies in, if the heap was given a code range
    /// ([`HeapConfig::code_range`]).
    pub fn code_range(&self) -> Option<core::ops::Range<usize>> {
        self.vm().code_range()
    }

    /// Allocates a block of `size` bytes, filled with traps. Small sizes are rounded up to a
    /// power of two of 128-byte chunks (to whole chunks under [`SizeClasses::Chunks`]),
    /// large ones to pages.
    pub fn alloc(&self, size: usize) -> Result<Block> {
        self.core.alloc_block(self.locked(), size, None)
    }

    /// Frees a block: its bytes are filled with traps and flushed, its chunks go back to its
    /// page (an empty page back to the page allocator), a large block's pages back to the
    /// page allocator.
    pub fn free(&self, block: Block) -> Result<()> {
        self.core
            .free_checked(&mut self.state(), block.addr, Some(block.key()))
    }

    /// Frees the block starting at `addr`, for engines that keep raw entry points. A handle
    /// still held for it becomes stale.
    pub fn free_address(&self, addr: usize) -> Result<()> {
        self.core.free_checked(&mut self.state(), addr, None)
    }
}

impl<O: Os> HeapCore<O> {
    /// The OS layer.
    pub(crate) fn vm(&self) -> &VirtualAlloc<O> {
        self.pages.vm()
    }

    /// Bytes the recorded block occupies: a small block's size class's capacity, or its
    /// floor's if larger (every free asks; a few inlined instructions), a large block's pages.
    #[inline]
    pub(crate) fn capacity_of(&self, state: &HeapState, record: &BlockRecord) -> usize {
        match record.home {
            Home::Small { .. } => self
                .capacity_of_size(record.size())
                .max(CHUNK << record.floor),
            Home::Large => state.large_pages(record) * self.page,
        }
    }

    /// Bytes a small block of `size` bytes occupies: its size class's capacity.
    #[inline]
    pub(crate) fn capacity_of_size(&self, size: usize) -> usize {
        SizeClass::of_accepted(size, self.page, self.classes).capacity(self.page)
    }

    /// Where the recorded block is written (its address but for dual-mapped memory): from
    /// its page for a small block, from the large-block map for a large one.
    #[inline]
    pub(crate) fn write_addr_of(&self, state: &HeapState, record: &BlockRecord) -> Result<usize> {
        match record.home {
            Home::Small { page, first_chunk } => {
                Ok(state.pages.get(page).write_addr + usize::from(first_chunk) * CHUNK)
            }
            Home::Large => match state.large.get(&record.addr) {
                Some(large) => Ok(large.write_addr),
                None => Ok(self.vm().writable_address(record.addr)?),
            },
        }
    }

    // ---- memory primitives ------------------------------------------------------------

    /// Fills `addr..addr + len` (written through `write_addr`) with traps and flushes it, in
    /// write mode. On aarch64 a leading or trailing partial word is zeroed.
    ///
    /// The range must lie in pages the heap holds, committed and open for writing (under
    /// `Protect`: read-write): the heap's own bookkeeping vouches for that, so the bytes go
    /// straight to the OS without the OS layer's per-call region lookup.
    pub(crate) fn fill_traps(
        &self,
        state: &mut HeapState,
        addr: usize,
        write_addr: usize,
        len: usize,
    ) -> Result<()> {
        let _write = WriteScope::enter();
        let os = self.vm().os();
        let head = (addr.next_multiple_of(self.arch.instruction_alignment()) - addr).min(len);
        // SAFETY: per this function's contract the range is committed, writable for this
        // thread (in write mode now) and held by the heap, whose lock the caller holds, so
        // nothing releases or reprotects it meanwhile; no Rust reference aliases it.
        unsafe {
            if head > 0 {
                os.fill(write_addr, head, &[0])?;
            }
            os.fill(write_addr + head, len - head, self.arch.trap_bytes())?;
            os.flush_icache(addr, len)?;
        }
        let counters = &mut state.counters;
        counters.fills += 1;
        counters.filled_bytes += len as u64;
        counters.icache_flushes += 1;
        Ok(())
    }

    /// Changes the protection of whole pages the heap holds. Only `Protect` needs it; other
    /// strategies count it as skipped and make no call at all.
    pub(crate) fn reprotect(
        &self,
        state: &mut HeapState,
        addr: usize,
        pages: usize,
        protection: Protection,
        expected: Protection,
    ) -> Result<()> {
        if self.strategy == WxStrategy::Protect {
            self.pages
                .protect_pages(addr, pages, protection, expected)?;
            state.counters.protect_made += 1;
        } else {
            state.counters.protect_skipped += 1;
        }
        Ok(())
    }

    /// Makes pages from the page allocator ready for blocks: trap-filled and executable
    /// (the heap's invariant: executable whenever no write is in progress). Fresh pages
    /// arrive read-write and are filled; pages the heap released come back as it left
    /// them, trap-filled (it scrubs what it frees) and usually executable already, and then
    /// cost nothing.
    fn prepare_pages(&self, state: &mut HeapState, run: PageRun) -> Result<()> {
        if run.fresh {
            self.fill_traps(state, run.addr, run.write_addr, run.pages * self.page)?;
        }
        if run.protection != Protection::ExecuteRead {
            // Recorded for every strategy (a no-op but under Protect), so queries of heap
            // pages tell the truth; later flips are made only under Protect.
            self.pages.protect_pages(
                run.addr,
                run.pages,
                Protection::ExecuteRead,
                run.protection,
            )?;
            if self.strategy == WxStrategy::Protect {
                state.counters.protect_made += 1;
            } else {
                state.counters.protect_skipped += 1;
            }
        }
        state.counters.pages_acquired += run.pages as u64;
        Ok(())
    }

    /// New pages from the page allocator, prepared, with `unwind_bytes` of secondary area
    /// in the same segment if asked for.
    pub(crate) fn acquire_pages(
        &self,
        state: &mut HeapState,
        pages: usize,
        unwind_bytes: Option<usize>,
    ) -> Result<Acquired> {
        let (run, slot) = match unwind_bytes {
            Some(bytes) => {
                let (run, slot) = self.pages.alloc_pages_with_secondary(pages, bytes)?;
                (run, Some(slot))
            }
            None => (self.pages.alloc_pages(pages)?, None),
        };
        match self.prepare_pages(state, run) {
            Ok(()) => Ok(Acquired { run, slot }),
            Err(err) => {
                if let Some(slot) = slot {
                    let _ = self.pages.release_secondary(slot.addr);
                }
                // Their fill may not have happened: they must not come back as they are.
                let _ = self.pages.discard_pages(run.addr, run.pages);
                Err(err)
            }
        }
    }

    /// Adds a freshly acquired page to the table, serving `bucket`.
    pub(crate) fn add_page(
        &self,
        state: &mut HeapState,
        acquired: &Acquired,
        bucket: usize,
    ) -> PageId {
        let addr = acquired.run.addr;
        let page = Page::new(addr, acquired.run.write_addr, self.page / CHUNK, bucket);
        let id = state.pages.insert(page);
        state.page_index.insert(addr, id);
        id
    }

    pub(crate) fn release_page(&self, state: &mut HeapState, id: PageId) {
        let addr = state.pages.get(id).addr;
        if self.pages.release_pages(addr, 1).is_ok() {
            state.pages.remove(id);
            state.page_index.remove(&addr);
            state.counters.pages_released += 1;
        } else if state.pages.get(id).list != PageList::Parked {
            // Kept as a spare (even past `SPARE_PAGES`): committed, trap-filled and
            // consistent.
            let bucket = state.pages.get(id).bucket();
            state.pages.relist(id, PageList::Spare, bucket);
        }
        // A parked page has no memory to be a spare with: it stays parked, empty, and its
        // release is tried again by the next `decommit_all`.
    }

    // ---- allocation -------------------------------------------------------------------

    /// Allocates a block, with room for its unwind entry if `frame` is given.
    pub(crate) fn alloc_block(
        &self,
        mut books: impl Books,
        size: usize,
        frame: Option<FrameDescription>,
    ) -> Result<Block> {
        let class = SizeClass::of(size, self.page, self.classes)?;
        let unwind = self.unwind_room(frame, size)?;
        self.place_block(&mut books.books(), size, class, unwind)
    }

    /// Places a block of `size` bytes of `class`, with its unwind entry's room if asked.
    ///
    /// Always inlined (into the alloc, the emit and the emit of a finished buffer): out of
    /// line, as the compiler leaves it, the block comes back through memory on every
    /// allocation.
    #[inline(always)]
    pub(crate) fn place_block(
        &self,
        state: &mut HeapState,
        size: usize,
        class: SizeClass,
        unwind: Option<(FrameDescription, usize)>,
    ) -> Result<Block> {
        let capacity = class.capacity(self.page);
        let entry_size = unwind.as_ref().map(|&(_, bytes)| bytes);
        let mut large_write_addr = 0;
        let (addr, home, slot) = match (class, entry_size) {
            (SizeClass::Small { bucket, chunks }, None) => {
                let (addr, home) = match state.freed.take(chunks) {
                    Some((id, first)) => self.reuse_kept(state, id, first, chunks),
                    None => {
                        let id = self.page_for(state, bucket, chunks)?;
                        self.take_chunks(state, id, chunks)
                    }
                };
                (addr, home, None)
            }
            (SizeClass::Small { bucket, chunks }, Some(bytes)) => {
                let (addr, home, slot) = match self.kept_with_unwind_room(state, chunks, bytes)? {
                    Some((id, first, slot)) => {
                        let (addr, home) = self.reuse_kept(state, id, first, chunks);
                        (addr, home, slot)
                    }
                    None => {
                        let (id, slot) =
                            self.page_with_unwind_room(state, bucket, chunks, bytes)?;
                        let (addr, home) = self.take_chunks(state, id, chunks);
                        (addr, home, slot)
                    }
                };
                (addr, home, Some(slot))
            }
            (SizeClass::Large { pages }, bytes) => {
                match self.kept_large_for(state, pages, bytes)? {
                    Some((kept, slot)) => {
                        large_write_addr = kept.write_addr;
                        (kept.addr, Home::Large, slot)
                    }
                    None => {
                        let acquired = self.acquire_pages(state, pages, bytes)?;
                        large_write_addr = acquired.run.write_addr;
                        (acquired.run.addr, Home::Large, acquired.slot)
                    }
                }
            }
        };
        let id = state.next_block_id(take_id_batch);
        let record = BlockRecord {
            id,
            addr,
            // `SizeClass::of` refused sizes past `u32::MAX`.
            size: size as u32,
            home,
            state: BlockState::Fresh,
            open: false,
            large_writers: 0,
            floor: 0,
        };
        let place = state.blocks.insert(record);
        match home {
            Home::Small { page, first_chunk } => {
                state.pages.set_place(page, usize::from(first_chunk), place);
            }
            Home::Large => {
                let large = LargeBlock {
                    place,
                    write_addr: large_write_addr,
                    pages: capacity / self.page,
                };
                state.large.insert(addr, large);
            }
        }
        if let (Some((frame, _)), Some(slot)) = (unwind, slot) {
            state.unwind.insert(addr, UnwindRecord::new(frame, slot));
        }
        state.counters.allocs += 1;
        Ok(Block {
            addr,
            size,
            capacity,
            id,
            place,
            published: 0,
        })
    }

    /// Takes the first run of `chunks` free chunks on page `id`, which has one.
    pub(crate) fn take_chunks(
        &self,
        state: &mut HeapState,
        id: PageId,
        chunks: usize,
    ) -> (usize, Home) {
        let free = state.pages.chunk_bits(id).free;
        let first = match self.classes {
            // Any free chunk of a bucket's page starts a free run long enough (see
            // `page_for`), so the first one is the first fit.
            SizeClasses::PowerOfTwo => free.next_set(0),
            SizeClasses::Chunks => free.find_run(chunks),
        }
        .expect("pages are chosen with room for the block");
        debug_assert!(free.all_set(first, chunks));
        state.pages.take(id, first, chunks);
        let page = state.pages.get(id);
        let addr = page.addr + first * CHUNK;
        let list = if page.is_full() {
            PageList::Full
        } else {
            page.list
        };
        let filed = self.filed_under(page, || state.pages.chunk_bits(id).free);
        state.pages.relist(id, list, filed);
        let home = Home::Small {
            page: id,
            first_chunk: first as u16,
        };
        (addr, home)
    }

    /// Takes back the kept block of `chunks` chunks at chunk `first` of page `id`: its
    /// chunks are still taken and hold traps, and its page is on the list it belongs on.
    fn reuse_kept(
        &self,
        state: &mut HeapState,
        id: PageId,
        first: usize,
        chunks: usize,
    ) -> (usize, Home) {
        state.pages.reuse(id, first, chunks);
        let home = Home::Small {
            page: id,
            first_chunk: first as u16,
        };
        (state.pages.get(id).addr + first * CHUNK, home)
    }

    /// A page with room for a block of `bucket`: one of the bucket's own, one split off a
    /// larger bucket, a spare, or a new one.
    ///
    /// Every block on a page of bucket `b` is a multiple of `1 << b` chunks placed at a
    /// multiple of `1 << b` (larger sizes are multiples of smaller ones), so any free chunk
    /// of such a page starts a free run long enough for the bucket.
    fn page_for(&self, state: &mut HeapState, bucket: usize, chunks: usize) -> Result<PageId> {
        if self.classes == SizeClasses::Chunks {
            if let Some(id) = state.pages.first_listed_from(chunks, true) {
                return Ok(id);
            }
            let whole = self.empty_page_list(bucket);
            if let Some(&id) = state.pages.spare.last() {
                state.pages.relist(id, PageList::Bucket, whole);
                return Ok(id);
            }
            let acquired = self.acquire_pages(state, 1, None)?;
            return Ok(self.add_page(state, &acquired, whole));
        }
        let pages = &state.pages;
        // A page without unwind room serves blocks without entries as well as any.
        let own = |b: usize| {
            (pages.buckets[b].last())
                .or_else(|| pages.no_unwind_room[b].last())
                .copied()
        };
        if let Some(id) = own(bucket) {
            return Ok(id);
        }
        let split = (bucket + 1..pages.buckets.len()).find_map(own);
        if let Some(id) = split.or_else(|| state.pages.spare.last().copied()) {
            state.pages.relist(id, PageList::Bucket, bucket);
            return Ok(id);
        }
        let acquired = self.acquire_pages(state, 1, None)?;
        Ok(self.add_page(state, &acquired, bucket))
    }

    /// The list an empty page joins to serve a request of `bucket`: the bucket's under
    /// [`SizeClasses::PowerOfTwo`], the one of a whole page's run under
    /// [`SizeClasses::Chunks`].
    pub(crate) fn empty_page_list(&self, bucket: usize) -> usize {
        match self.classes {
            SizeClasses::PowerOfTwo => bucket,
            SizeClasses::Chunks => self.page / CHUNK,
        }
    }

    /// The list index a page with free chunks belongs under: its bucket under
    /// [`SizeClasses::PowerOfTwo`]; the length of its longest free run under
    /// [`SizeClasses::Chunks`], so the first non-empty list at or above a request's length
    /// holds its best fits. (A full page keeps the index it had.)
    #[inline]
    fn filed_under<'a>(&self, page: &Page, free: impl FnOnce() -> Bits<&'a [u64]>) -> usize {
        if self.classes == SizeClasses::Chunks && !page.is_full() {
            free().longest_run()
        } else {
            page.bucket()
        }
    }

    // ---- free ---------------------------------------------------------------------------

    /// Where the live record of the block at `addr` is: the place the handle carries, if
    /// there is a handle and it is still its block's, or the address's.
    #[inline]
    pub(crate) fn locate(
        &self,
        state: &HeapState,
        addr: usize,
        handle: Option<HandleKey>,
    ) -> Result<Place> {
        match handle {
            Some(key) => {
                (state.blocks.checked(key.place, key.id)).ok_or(Error::StaleBlock { addr })
            }
            None => (state.place_at(addr)).ok_or_else(|| self.why_not_a_block(state, addr)),
        }
    }

    #[cold]
    pub(crate) fn why_not_a_block(&self, state: &HeapState, addr: usize) -> Error {
        if let Some(info) = self.find_in(state, addr) {
            return Error::InteriorAddress {
                addr,
                block: info.addr,
            };
        }
        // Inside memory the heap has reserved but no live block: freed already (a double
        // free), or never handed out.
        if self.vm().is_jit_address(addr) {
            Error::NotAllocated { addr }
        } else {
            Error::NotFromHeap { addr }
        }
    }

    /// Frees the block at `addr` (checked against its handle's key if there is one).
    pub(crate) fn free_checked(
        &self,
        state: &mut HeapState,
        addr: usize,
        handle: Option<HandleKey>,
    ) -> Result<()> {
        if handle.is_none() {
            // A handle may still exist for the block: its cached entry point must go.
            self.epoch.fetch_add(1, Ordering::Release);
        }
        let place = self.locate(state, addr, handle)?;
        let record = *state.blocks.at(place);
        let capacity = self.capacity_of(state, &record);
        match record.state {
            BlockState::Writing => return Err(Error::BlockBusy { addr }),
            BlockState::Parked => {}
            BlockState::Fresh | BlockState::Finalized => {
                // The unwinder must forget the code before it goes.
                self.deregister_unwind(state, addr);
                self.scrub(state, place, &record, capacity, 0)?;
            }
        }
        let slot_freed = self.release_unwind_slot(state, addr);
        match record.home {
            Home::Small { page, first_chunk } => {
                let chunks = capacity / CHUNK;
                self.free_small(state, page, usize::from(first_chunk), chunks, slot_freed);
            }
            Home::Large => {
                let pages = capacity / self.page;
                if !self.keep_large(state, place, &record, pages) {
                    if let Err(err) = self.pages.release_pages(addr, pages) {
                        // Still allocated, trap-filled, not runnable: close it again.
                        if record.state != BlockState::Parked {
                            state.blocks.at_mut(place).state = BlockState::Fresh;
                        }
                        return Err(err.into());
                    }
                    state.counters.pages_released += pages as u64;
                }
                state.large.remove(&addr);
            }
        }
        state.blocks.remove(place);
        state.counters.frees += 1;
        Ok(())
    }

    /// Keeps a freed large block of `pages` pages (already scrubbed) for the next allocation
    /// of its page count, if blocks are kept, it is within their budget, its memory is
    /// committed and closed (a refused close leaves it for the page allocator, whose next
    /// holder reopens it), and room can be made by giving back older kept blocks. `false`:
    /// not kept, for the caller to give back.
    fn keep_large(
        &self,
        state: &mut HeapState,
        place: Place,
        record: &BlockRecord,
        pages: usize,
    ) -> bool {
        let keepable = state.kept_large.takes(pages)
            && record.state != BlockState::Parked
            && !state.blocks.at(place).open;
        let write_addr = match state.large.get(&record.addr) {
            Some(large) if keepable => large.write_addr,
            _ => return false,
        };
        while !state.kept_large.has_room_for(pages) {
            // Nothing left to give back (the budget is smaller than the block) or a refusal:
            // the block is not kept, rather than looping on.
            if !matches!(self.release_oldest_kept_large(state), Ok(true)) {
                return false;
            }
        }
        state.kept_large.keep(KeptLarge {
            addr: record.addr,
            write_addr,
            pages,
        });
        true
    }

    /// Fills what a block's code may have left from byte `from` on (its bytes up to its
    /// size, within its `capacity`) with traps, opening its pages under `Protect` if no
    /// write session has them open: all of a freed block, the cut-off end of a shrunk one.
    ///
    /// Always inlined (into the free and the shrink): the compiler keeps it out of line,
    /// and every free then passes the record and the result through memory.
    #[inline(always)]
    pub(crate) fn scrub(
        &self,
        state: &mut HeapState,
        place: Place,
        record: &BlockRecord,
        capacity: usize,
        from: usize,
    ) -> Result<()> {
        let dirty = record.dirty_len(self.arch.instruction_alignment(), capacity);
        debug_assert!(from < dirty);
        let write_addr = self.write_addr_of(state, record)? + from;
        let span = Span::of(record, place);
        let (filled, closed) = self.with_span_open(state, span, |state| {
            self.fill_traps(state, record.addr + from, write_addr, dirty - from)
        });
        // Closed again even when the pages go back to the page allocator next (it may keep
        // them: every committed code page not being written is execute-read). Once the
        // traps are in, the free goes on: a refused close leaves the span recorded open, for
        // the next close on it to retry.
        if filled.is_err() {
            closed?;
        }
        filled
    }

    /// A freed small block's chunks (already scrubbed): kept for the next allocation of
    /// their size if the page keeps live blocks and the cache has room (`freed.rs`), given
    /// back otherwise. A page left with no live block first gets back the blocks kept from
    /// it, so that it goes where an empty page goes.
    fn free_small(
        &self,
        state: &mut HeapState,
        id: PageId,
        first: usize,
        chunks: usize,
        slot_freed: bool,
    ) {
        let page = state.pages.get(id);
        if page.live_chunks() == chunks {
            if page.kept_chunks > 0 {
                for (kept, n) in state.freed.take_page(id) {
                    self.give_back_kept(state, id, kept, n);
                }
            }
        } else if matches!(page.list, PageList::Bucket | PageList::Full)
            && state.freed.keep(id, first, chunks)
        {
            state.pages.keep(id, first, chunks);
            return;
        }
        self.free_chunks(state, id, first, chunks, slot_freed);
    }

    /// Gives a kept block's chunks back to its page, no longer kept (the cache has let go
    /// of it already).
    pub(crate) fn give_back_kept(
        &self,
        state: &mut HeapState,
        id: PageId,
        first: usize,
        chunks: usize,
    ) {
        state.pages.unkeep(id, chunks);
        self.free_chunks(state, id, first, chunks, false);
    }

    /// Gives a block's chunks back to its page and moves the page where it now belongs.
    /// `slot_freed`: the block's unwind slot was released, so the page's segment has
    /// secondary room again.
    fn free_chunks(
        &self,
        state: &mut HeapState,
        id: PageId,
        first: usize,
        chunks: usize,
        slot_freed: bool,
    ) {
        state.pages.give_back(id, first, chunks);
        let page = state.pages.get(id);
        let (list, empty) = (page.list, page.is_empty());
        let bucket = self.filed_under(page, || state.pages.chunk_bits(id).free);
        match list {
            PageList::Parked if empty => self.release_page(state, id),
            PageList::Parked | PageList::Spare => {}
            _ if empty && state.pages.spare.len() < SPARE_PAGES => {
                state.pages.relist(id, PageList::Spare, bucket);
            }
            _ if empty => self.release_page(state, id),
            PageList::Full => state.pages.relist(id, PageList::Bucket, bucket),
            PageList::NoUnwindRoom if slot_freed => {
                state.pages.relist(id, PageList::Bucket, bucket);
            }
            PageList::NoUnwindRoom | PageList::Bucket => state.pages.relist(id, list, bucket),
        }
    }

    /// [`Heap::decommit_all`].
    pub(crate) fn decommit_all(&self, state: &mut HeapState) -> Result<()> {
        self.epoch.fetch_add(1, Ordering::Release);
        if let Some(record) =
            (state.blocks.values()).find(|record| record.state == BlockState::Writing)
        {
            return Err(Error::BlockBusy { addr: record.addr });
        }
        // Kept blocks go back first: their pages are then as if they had been freed, and
        // decommitted or released with the rest.
        for (id, first, chunks) in state.freed.take_all() {
            self.give_back_kept(state, id, first, chunks);
        }
        self.release_kept_large(state)?;
        let mut parked = Vec::new();
        let outcome = self.decommit_holdings(state, &mut parked);
        // Whatever the OS refused, the code that is gone is forgotten by the unwinder.
        self.deregister_unwind_newest_first(state, &parked);
        outcome
    }

    /// Gives back the spare pages and decommits every page and large block holding blocks,
    /// one at a time; each block is parked as soon as its memory is gone, so an error
    /// midway leaves no runnable block on decommitted memory. `parked` collects them.
    fn decommit_holdings(&self, state: &mut HeapState, parked: &mut Vec<usize>) -> Result<()> {
        let empty_parked: Vec<PageId> = state
            .pages
            .parked
            .iter()
            .copied()
            .filter(|&id| state.pages.get(id).is_empty())
            .collect();
        for id in empty_parked {
            self.release_page(state, id);
        }
        self.release_spares(state)?;
        let holding: Vec<PageId> = state
            .pages
            .live()
            .filter(|(_, page)| page.list != PageList::Parked)
            .map(|(id, _)| id)
            .collect();
        for id in holding {
            let (addr, bucket) = (state.pages.get(id).addr, state.pages.get(id).bucket());
            self.pages.decommit_pages(addr, 1)?;
            state.pages.relist(id, PageList::Parked, bucket);
            let blocks: Vec<(usize, Place)> = (0..self.page / CHUNK)
                .filter_map(|chunk| Some((addr + chunk * CHUNK, state.pages.place_at(id, chunk)?)))
                .collect();
            for (block, place) in blocks {
                state.blocks.at_mut(place).state = BlockState::Parked;
                parked.push(block);
            }
        }
        let large: Vec<(Place, usize, usize)> = (state.large.iter())
            .filter(|(_, large)| state.blocks.at(large.place).state != BlockState::Parked)
            .map(|(&addr, large)| (large.place, addr, large.pages))
            .collect();
        for (place, addr, pages) in large {
            self.pages.decommit_pages(addr, pages)?;
            state.blocks.at_mut(place).state = BlockState::Parked;
            parked.push(addr);
        }
        Ok(())
    }

    // ---- running ------------------------------------------------------------------------

    /// [`Heap::entry_point`]; the bookkeeping is only needed if the handle's block changed
    /// since it was last written.
    #[inline]
    pub(crate) fn entry_point(&self, mut books: impl Books, block: &Block) -> Result<usize> {
        require_mode(ThreadMode::Execute)?;
        if block.published != 0 && block.published == self.epoch.load(Ordering::Acquire) {
            // Finalized when the handle last wrote it, and changed by no one since.
            return Ok(block.addr);
        }
        let state = books.books();
        let place = self.locate(&state, block.addr, Some(block.key()))?;
        match state.blocks.at(place).state {
            BlockState::Finalized => Ok(block.addr),
            BlockState::Parked => Err(Error::Decommitted { addr: block.addr }),
            BlockState::Fresh | BlockState::Writing => {
                Err(Error::NotFinalized { addr: block.addr })
            }
        }
    }

    // ---- introspection ------------------------------------------------------------------

    pub(crate) fn find_in(&self, state: &HeapState, addr: usize) -> Option<BlockInfo> {
        let start = match state.page_index.get(&(addr - addr % self.page)) {
            Some(&id) => {
                let page = state.pages.get(id);
                let bits = state.pages.chunk_bits(id);
                let chunk = bits.block_start((addr - page.addr) / CHUNK)?;
                page.addr + chunk * CHUNK
            }
            None => *state.large.range(..=addr).next_back()?.0,
        };
        let record = state.blocks.at(state.place_at(start)?);
        let capacity = self.capacity_of(state, record);
        (addr < start + capacity).then_some(BlockInfo {
            addr: start,
            size: record.size(),
            capacity,
            finalized: record.state == BlockState::Finalized,
            large: record.home == Home::Large,
        })
    }

    /// [`Heap::stats`].
    pub(crate) fn stats(&self, state: &HeapState) -> HeapStats {
        let pages = &state.pages;
        let bucket_total = bucket_count(self.page);
        let mut buckets: Vec<BucketStats> = (0..bucket_total)
            .map(|b| BucketStats {
                block_size: CHUNK << b,
                ..BucketStats::default()
            })
            .collect();
        for (_, page) in pages.live() {
            // Chunk classes file pages by their longest free run: such a page counts in the
            // bucket of the largest block it can still take, a full one in the last bucket.
            let bucket = match (self.classes, page.list) {
                (SizeClasses::PowerOfTwo, _) => page.bucket(),
                (SizeClasses::Chunks, PageList::Full) => bucket_total - 1,
                (SizeClasses::Chunks, _) => bucket_of(page.bucket()),
            };
            match page.list {
                PageList::Bucket | PageList::NoUnwindRoom => buckets[bucket].pages += 1,
                PageList::Full => {
                    buckets[bucket].pages += 1;
                    buckets[bucket].full_pages += 1;
                }
                PageList::Spare | PageList::Parked => {}
            }
        }
        let mut stats = HeapStats::default();
        for record in state.blocks.values() {
            stats.live_blocks += 1;
            let capacity = self.capacity_of(state, record);
            stats.requested_bytes += record.size();
            stats.allocated_bytes += capacity;
            match record.home {
                Home::Small { .. } => {
                    let bucket = &mut buckets[bucket_of(capacity / CHUNK)];
                    bucket.blocks += 1;
                    bucket.used_bytes += capacity;
                }
                Home::Large => {
                    stats.large_blocks += 1;
                    stats.large_bytes += capacity;
                }
            }
        }
        for (_, _, chunks) in state.freed.iter() {
            stats.kept_blocks += 1;
            stats.kept_bytes += chunks * CHUNK;
        }
        stats.kept_large_blocks = state.kept_large.iter().count();
        stats.kept_large_bytes = state.kept_large.pages() * self.page;
        let below = self.pages.stats();
        let counters = state.counters;
        HeapStats {
            buckets,
            rounding_loss: stats.allocated_bytes - stats.requested_bytes,
            spare_pages: pages.spare.len(),
            parked_pages: pages.parked.len(),
            committed_bytes: below.committed_bytes,
            reserved_bytes: below.reserved_bytes,
            protect_calls_made: counters.protect_made,
            protect_calls_skipped: counters.protect_skipped,
            fills: counters.fills,
            filled_bytes: counters.filled_bytes,
            icache_flushes: counters.icache_flushes,
            pages_acquired: counters.pages_acquired,
            pages_released: counters.pages_released,
            allocs: counters.allocs,
            frees: counters.frees,
            secondary_probes: counters.secondary_probes,
            patches: counters.patches,
            ..stats
        }
    }
}

impl<O: Os> Heap<O> {
    /// Decommits everything: every page holding blocks gives its memory back but keeps its
    /// address (so a stale entry point faults rather than running reused memory), spare
    /// pages go back, and live blocks can only be freed from now on. New allocations take
    /// new pages. Fails with `BlockBusy` (changing nothing) while a block is being written.
    pub fn decommit_all(&self) -> Result<()> {
        self.core.decommit_all(&mut self.state())
    }

    /// The entry point of a finalized block, for a thread in execute mode: a background
    /// compiler in write mode is refused (`WrongThreadMode`), as is a block not finalized.
    pub fn entry_point(&self, block: &Block) -> Result<usize> {
        self.core.entry_point(self.locked(), block)
    }

    /// Makes every thread of the process discard instructions it fetched before the last
    /// icache flush ([`VirtualAlloc::sync_cores`](codeheap_virtual_alloc::VirtualAlloc::sync_cores):
    /// `membarrier` on Linux, nothing on macOS). The heap flushes what it writes, but on
    /// aarch64 a thread about to run code another thread wrote must also not run what it
    /// fetched earlier from the same addresses (a block reused after a free, say): call this
    /// once after writing a batch of blocks and before handing their entry points, or a
    /// branch patched to them ([`patch`](Heap::patch)), to threads that run them. Intel's
    /// rule for cross-modifying code asks the same of x86-64 (a serialising instruction on
    /// the running thread), though its instruction fetch follows stores in practice.
    pub fn sync_cores(&self) -> Result<()> {
        Ok(self.vm().sync_cores()?)
    }

    /// The block's entry point as a function pointer of type `F`, under the checks of
    /// [`entry_point`](Heap::entry_point).
    ///
    /// # Safety
    /// `F` must be a function pointer type matching the code written in the block, and the
    /// block must outlive every call through the pointer.
    pub unsafe fn function<F: Copy>(&self, block: &Block) -> Result<F> {
        const {
            assert!(
                core::mem::size_of::<F>() == core::mem::size_of::<usize>(),
                "F must be a function pointer"
            )
        };
        let entry = self.entry_point(block)?;
        // SAFETY: `F` is pointer-sized (checked above) and, per the caller, a function
        // pointer type for the finalized code at `entry`.
        Ok(unsafe { core::mem::transmute_copy::<usize, F>(&entry) })
    }

    /// Calls the block as `extern "C" fn() -> u32`: really on a real OS, by decoding it on
    /// the simulator. For tests and demos.
    ///
    /// # Safety
    /// The block must hold a complete function of that signature.
    pub unsafe fn call(&self, block: &Block) -> Result<u32> {
        let entry = self.entry_point(block)?;
        // SAFETY: forwarded to the caller; the block is finalized and flushed.
        Ok(unsafe { self.vm().call(entry) }?)
    }

    /// The live block holding `addr`, if any.
    pub fn find(&self, addr: usize) -> Option<BlockInfo> {
        self.core.find_in(&self.state(), addr)
    }

    /// Whether `addr` lies in memory this heap manages (the seeds' `IsMapJitRegion`, and
    /// ChakraCore's `IsNativeAddress`).
    pub fn is_jit_address(&self, addr: usize) -> bool {
        self.vm().is_jit_address(addr)
    }

    /// A snapshot of the heap.
    pub fn stats(&self) -> HeapStats {
        self.core.stats(&self.state())
    }
}

static_assertions::assert_impl_all!(Heap<codeheap_virtual_alloc::sim::SimOs>: Send, Sync);

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches taken one after another (other heaps may take theirs in between) are whole
    /// and never overlap, so ids stay unique in the process.
    #[test]
    fn id_batches_are_whole_and_apart() {
        let (first, second) = (take_id_batch(), take_id_batch());
        assert_eq!(first.end - first.start, BLOCK_ID_BATCH);
        assert_eq!(second.end - second.start, BLOCK_ID_BATCH);
        assert!(first.start > 0, "0 marks a vacant record");
        assert!(first.end <= second.start, "{first:?} then {second:?}");
    }
}
