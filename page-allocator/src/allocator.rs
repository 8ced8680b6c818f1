//! [`PageAllocator`]: ChakraCore's `HeapPageAllocator` over a [`VirtualAlloc`].

use codeheap_virtual_alloc::sync::{Mutex, lock};
use codeheap_virtual_alloc::{Os, PageState, Protection, VirtualAlloc};

use crate::bitmap::Bitmap;
use crate::config::PageAllocatorConfig;
use crate::error::{Error, Result};
use crate::secondary::{SecondarySlot, SlotAllocator};
use crate::segment::{LargeSegment, Segment, SegmentList};
use crate::state::{Place, State};
use crate::stats::{PageAllocatorStats, ProtectCounters, SegmentCounts};

/// Most segments weighed for a request no free run fits (see `take_decommitted`): a bound
/// on its cost however many segments there are. Every segment with decommitted pages was
/// weighed before: 88 µs per step of the `page_runs` benchmark over 4,000 live runs.
pub(crate) const SEGMENTS_WEIGHED: usize = 64;

/// Pages handed out by [`PageAllocator::alloc_pages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRun {
    /// Address of the first page.
    pub addr: usize,
    /// Where the first page is written: `addr` but under `DualMap`, whose writable view
    /// lies elsewhere. Known from the segment, so a holder needs no region lookup for it.
    pub write_addr: usize,
    /// Number of pages.
    pub pages: usize,
    /// Base of the segment (or large segment) holding them.
    pub segment: usize,
    /// Whether they have a dedicated large segment.
    pub large: bool,
    /// Whether any of them was committed by this call: such pages hold unspecified bytes
    /// (zeros on most systems). Otherwise every page holds what it held when it was
    /// released, so a caller that scrubs what it releases need not scrub again.
    pub fresh: bool,
    /// The protection they all have: read-write when fresh; otherwise the one they were
    /// released with (read-write if that differed from page to page).
    pub protection: Protection,
}

/// Hands out runs of code pages from segments, as ChakraCore's `HeapPageAllocator`.
///
/// * A segment is a 64 KiB-aligned reservation of `segment_pages` pages whose last
///   `secondary_pages` hold unwind data. Code pages are committed on demand, read-write;
///   the caller makes them executable with [`protect_pages`](Self::protect_pages).
/// * Requests larger than a segment's code pages get a dedicated large segment.
/// * Released pages are kept committed up to `max_free_pages` (a code heap keeps none by
///   default). A release that would keep more decommits the free pages of the segments
///   released into longest ago if they make all the room, else its own excess; a segment
///   with nothing allocated, nothing committed and no slot in use goes back to the OS.
/// * Segments sit on lists by state (partial, full, empty, decommitted); allocation takes
///   free committed pages first (the shortest free run that fits, so holes are filled
///   before long runs are cut), then commits decommitted ones (where the fewest need
///   committing), then reserves a segment.
///
/// State is kept under one lock. `protect_pages` validates under it but makes its system
/// call outside it, as ChakraCore does: an `mprotect` costs microseconds (more with other
/// threads running, for the TLB shootdown) and would stall every other allocating thread;
/// the OS layer's per-region lock keeps each protect atomic.
#[derive(Debug)]
pub struct PageAllocator<O: Os> {
    vm: VirtualAlloc<O>,
    config: PageAllocatorConfig,
    page: usize,
    state: Mutex<State>,
    protects: ProtectCounters,
}

impl<O: Os> PageAllocator<O> {
    /// A page allocator over `vm` with `config`; `InvalidConfig` if the geometry cannot work
    /// with the OS page size.
    pub fn new(vm: VirtualAlloc<O>, config: PageAllocatorConfig) -> Result<PageAllocator<O>> {
        config.validate(vm.page_size())?;
        Ok(PageAllocator {
            page: vm.page_size(),
            vm,
            config,
            state: Mutex::new(State::default()),
            protects: ProtectCounters::default(),
        })
    }

    /// The OS layer underneath: write code and secondary slots through it.
    pub fn vm(&self) -> &VirtualAlloc<O> {
        &self.vm
    }

    /// The geometry and policy in use.
    pub fn config(&self) -> &PageAllocatorConfig {
        &self.config
    }

    /// The page size.
    pub fn page_size(&self) -> usize {
        self.page
    }

    fn segment_bytes(&self) -> usize {
        self.config.segment_pages * self.page
    }

    fn bytes(&self, pages: usize) -> Result<usize> {
        if pages == 0 {
            return Err(Error::ZeroPages);
        }
        pages
            .checked_mul(self.page)
            .filter(|bytes| {
                bytes
                    .checked_next_multiple_of(self.vm.allocation_granularity())
                    .is_some()
            })
            .ok_or(Error::PageCountOverflow { pages })
    }

    fn check_aligned(&self, addr: usize) -> Result<()> {
        if addr.is_multiple_of(self.page) {
            Ok(())
        } else {
            Err(Error::Unaligned {
                addr,
                align: self.page,
            })
        }
    }

    fn new_slots(&self, secondary_base: usize) -> Option<SlotAllocator> {
        (self.config.secondary_pages > 0).then(|| {
            let area = self.config.secondary_pages * self.page;
            SlotAllocator::new(secondary_base, area, self.config.secondary_slot_size)
        })
    }

    // ---- allocation ---------------------------------------------------------------------

    /// Hands out `pages` contiguous pages, committed. Fresh ones ([`PageRun::fresh`]) are
    /// read-write with unspecified contents; pages reused as they were released keep their
    /// contents and protection ([`PageRun::protection`]), so a caller that releases pages
    /// executable and trap-filled takes them back with no system call at all.
    pub fn alloc_pages(&self, pages: usize) -> Result<PageRun> {
        let bytes = self.bytes(pages)?;
        let mut state = lock(&self.state);
        if pages > self.config.code_pages() {
            return self.alloc_large(&mut state, pages, bytes);
        }
        let run = self.take_pages(&mut state, pages, &|_| true)?;
        state.used_pages += pages;
        Ok(run)
    }

    /// Hands out `pages` pages, as [`alloc_pages`](Self::alloc_pages), together with
    /// `bytes` of the same segment's secondary area: for code that needs unwind data next
    /// to it. Only segments with a long enough run of free slots are considered.
    pub fn alloc_pages_with_secondary(
        &self,
        pages: usize,
        bytes: usize,
    ) -> Result<(PageRun, SecondarySlot)> {
        let page_bytes = self.bytes(pages)?;
        let slots = self.secondary_slots(bytes)?;
        let mut state = lock(&self.state);
        let run = if pages > self.config.code_pages() {
            self.alloc_large(&mut state, pages, page_bytes)?
        } else {
            let fits = |segment: &Segment| segment.slots.as_ref().is_some_and(|s| s.can_fit(slots));
            let run = self.take_pages(&mut state, pages, &fits)?;
            state.used_pages += pages;
            run
        };
        // The segment was chosen with room; only committing its secondary area can fail.
        // Pages committed for this call go back decommitted: kept, they would later come
        // back as "what their holder left", which no holder wrote.
        match self.take_slots(&mut state, run.segment, slots) {
            Ok(slot) => Ok((run, slot)),
            Err(err) => {
                let _ = self.release_in(&mut state, run.addr, run.pages, !run.fresh);
                Err(err)
            }
        }
    }

    /// Slots `bytes` of secondary data need; an error if no area could hold them.
    fn secondary_slots(&self, bytes: usize) -> Result<usize> {
        let area = self.config.secondary_pages * self.page;
        if bytes == 0 {
            Err(Error::ZeroPages)
        } else if bytes > area {
            Err(Error::SecondaryTooLarge { bytes, area })
        } else {
            Ok(bytes.div_ceil(self.config.secondary_slot_size))
        }
    }

    /// A run of pages from the first segment `fits` accepts: free pages, then decommitted
    /// ones, then a new segment.
    fn take_pages(
        &self,
        state: &mut State,
        pages: usize,
        fits: &dyn Fn(&Segment) -> bool,
    ) -> Result<PageRun> {
        if let Some(run) = self.take_free(state, pages, fits)? {
            return Ok(run);
        }
        if let Some(run) = self.take_decommitted(state, pages, fits)? {
            return Ok(run);
        }
        self.take_from_new_segment(state, pages)
    }

    /// Pages already committed and free, if a segment has a run of them: the shortest run
    /// that fits, over all segments (the oldest segment's of equals), so single pages fill
    /// holes and long runs stay whole for large requests. Segments on the full list (their
    /// secondary area exhausted) are passed over, as ChakraCore does.
    fn take_free(
        &self,
        state: &mut State,
        pages: usize,
        fits: &dyn Fn(&Segment) -> bool,
    ) -> Result<Option<PageRun>> {
        let found = state
            .free_runs
            .range((pages, 0, 0, 0)..)
            .find_map(|&(_, _, base, first)| {
                let segment = &state.segments[&base];
                (segment.list != SegmentList::Full && fits(segment))
                    .then_some(((base, segment.write_base), first))
            });
        let Some(((base, write_base), first)) = found else {
            return Ok(None);
        };
        let addr = base + first * self.page;
        // Free pages keep the protection their last holder left; a run that mixes several
        // is made read-write.
        let info = self.vm.query(addr)?;
        let protection = match info.state {
            PageState::Committed(protection) if info.size >= pages * self.page => protection,
            _ => {
                self.vm
                    .protect(addr, pages * self.page, Protection::ReadWrite)?;
                Protection::ReadWrite
            }
        };
        state.set_free(base, first, pages, false);
        state.free_pages -= pages;
        state.refile(base);
        Ok(Some(PageRun {
            protection,
            ..self.run((base, write_base), first, pages, false)
        }))
    }

    /// A run of free or decommitted pages in a segment that has decommitted ones: of the
    /// segments whose longest such run holds the request, shortest runs first (`by_room`),
    /// at most [`SEGMENTS_WEIGHED`] of them, the window with the most free pages (the first
    /// found of equals; a window with one page to commit ends the search). The decommitted
    /// pages are committed. Taking free pages along keeps fewer committed pages idle, so
    /// fewer are decommitted later.
    fn take_decommitted(
        &self,
        state: &mut State,
        pages: usize,
        fits: &dyn Fn(&Segment) -> bool,
    ) -> Result<Option<PageRun>> {
        let mut best: Option<(usize, usize, usize)> = None;
        let candidates = (state.by_room.at_least(pages))
            .filter(|base| fits(&state.segments[base]))
            .take(SEGMENTS_WEIGHED);
        for base in candidates {
            let Some((first, free)) = state.segments[&base].fullest_window(pages) else {
                continue;
            };
            if best.is_none_or(|(_, _, most)| free > most) {
                best = Some((base, first, free));
                if free + 1 >= pages {
                    break;
                }
            }
        }
        let Some((base, first, _)) = best else {
            return Ok(None);
        };
        let addr = base + first * self.page;
        self.vm
            .commit(addr, pages * self.page, Protection::ReadWrite)?;
        let was_free = (first..first + pages)
            .filter(|&i| state.segments[&base].free.get(i))
            .count();
        state.change(base, first, pages, |segment| {
            segment.decommitted.clear_range(first, pages);
            segment.free.clear_range(first, pages);
        });
        state.free_pages -= was_free;
        state.refile(base);
        let write_base = state.segments[&base].write_base;
        Ok(Some(self.run((base, write_base), first, pages, true)))
    }

    /// Reserves a segment, commits its secondary area and the first `pages` code pages.
    fn take_from_new_segment(&self, state: &mut State, pages: usize) -> Result<PageRun> {
        let code_pages = self.config.code_pages();
        let region = self.vm.reserve(self.segment_bytes())?;
        let secondary_base = region.base + code_pages * self.page;
        let committed = self
            .vm
            .commit(region.base, pages * self.page, Protection::ReadWrite);
        if let Err(err) = committed {
            let _ = self.vm.release(region.base);
            return Err(err.into());
        }
        let mut decommitted = Bitmap::new(code_pages);
        decommitted.set_range(pages, code_pages - pages);
        let segment = Segment {
            code_pages,
            free: Bitmap::new(code_pages),
            decommitted,
            parked: Bitmap::new(code_pages),
            slots: self.new_slots(secondary_base),
            list: SegmentList::Full,
            filed: None,
            serial: state.segments_created,
            write_base: region.write_base,
            last_kept: 0,
        };
        state.add_segment(region.base, segment);
        state.segments_created += 1;
        state.refile(region.base);
        Ok(self.run((region.base, region.write_base), 0, pages, true))
    }

    fn alloc_large(&self, state: &mut State, pages: usize, bytes: usize) -> Result<PageRun> {
        let secondary = self.config.secondary_pages * self.page;
        let size = bytes
            .checked_add(secondary)
            .ok_or(Error::PageCountOverflow { pages })?;
        let region = self.vm.reserve(size)?;
        let secondary_base = region.base + bytes;
        let committed = self.vm.commit(region.base, bytes, Protection::ReadWrite);
        if let Err(err) = committed {
            let _ = self.vm.release(region.base);
            return Err(err.into());
        }
        let large = LargeSegment {
            pages,
            size: region.size,
            parked: false,
            slots: self.new_slots(secondary_base),
        };
        state.large.insert(region.base, large);
        state.segments_created += 1;
        state.used_pages += pages;
        Ok(PageRun {
            addr: region.base,
            write_addr: region.write_base,
            pages,
            segment: region.base,
            large: true,
            fresh: true,
            protection: Protection::ReadWrite,
        })
    }

    /// `pages` pages from page `first` of the segment at `base`, written from `write_base`.
    fn run(
        &self,
        (base, write_base): (usize, usize),
        first: usize,
        pages: usize,
        fresh: bool,
    ) -> PageRun {
        PageRun {
            addr: base + first * self.page,
            write_addr: write_base + first * self.page,
            pages,
            segment: base,
            large: false,
            fresh,
            protection: Protection::ReadWrite,
        }
    }

    // ---- release ------------------------------------------------------------------------

    /// Whether the `pages` pages at `addr` are all handed out, in one segment (or large
    /// allocation): what a layer above can check the pages it holds against.
    pub fn is_allocated(&self, addr: usize, pages: usize) -> bool {
        let state = lock(&self.state);
        self.locate_allocated(&state, addr, pages, false).is_ok()
    }

    /// Where `pages` pages at `addr` lie, checked: page-aligned, in one segment's code pages
    /// (or exactly a large allocation when `whole_large`), all allocated.
    fn locate_allocated(
        &self,
        state: &State,
        addr: usize,
        pages: usize,
        whole_large: bool,
    ) -> Result<(Place, usize)> {
        self.bytes(pages)?;
        self.check_aligned(addr)?;
        let place = state
            .place_of(addr, self.segment_bytes())
            .ok_or(Error::NotInSegment { addr })?;
        let crosses = Error::CrossesSegment { addr, pages };
        match place {
            Place::Large(base) => {
                let large = &state.large[&base];
                let in_pages = addr - base < large.pages * self.page;
                if !in_pages {
                    return Err(Error::NotAllocated { addr });
                }
                let exact = addr == base && pages == large.pages;
                if whole_large && !exact {
                    return Err(Error::PartialLargeRelease {
                        base,
                        pages: large.pages,
                    });
                }
                if (addr - base) / self.page + pages > large.pages {
                    return Err(crosses);
                }
                Ok((place, 0))
            }
            Place::Segment(base) => {
                let segment = &state.segments[&base];
                let first = (addr - base) / self.page;
                if first + pages > segment.code_pages {
                    return Err(crosses);
                }
                match segment.first_unallocated(first, pages) {
                    Some(i) => Err(Error::NotAllocated {
                        addr: base + i * self.page,
                    }),
                    None => Ok((place, first)),
                }
            }
        }
    }

    /// Gives back `pages` pages at `addr`, which `alloc_pages` handed out (a large
    /// allocation is released whole). They are kept committed if `max_free_pages` has room
    /// for them, made if need be by decommitting the free pages of the segments released
    /// into longest ago; what does not fit is decommitted. A segment left with nothing in
    /// use goes back to the OS.
    pub fn release_pages(&self, addr: usize, pages: usize) -> Result<()> {
        self.release(addr, pages, true)
    }

    /// Gives back pages, as [`release_pages`](Self::release_pages), but decommits them all
    /// whatever `max_free_pages` allows: for pages whose contents must not be handed out
    /// again as they are (a caller's scrub of them failed).
    pub fn discard_pages(&self, addr: usize, pages: usize) -> Result<()> {
        self.release(addr, pages, false)
    }

    fn release(&self, addr: usize, pages: usize, may_keep: bool) -> Result<()> {
        self.release_in(&mut lock(&self.state), addr, pages, may_keep)
    }

    fn release_in(
        &self,
        state: &mut State,
        addr: usize,
        pages: usize,
        may_keep: bool,
    ) -> Result<()> {
        let (place, first) = self.locate_allocated(state, addr, pages, true)?;
        let base = match place {
            Place::Large(base) => return self.release_large(state, base),
            Place::Segment(base) => base,
        };
        let segment = &state.segments[&base];
        let (any_parked, own_free) = (
            segment.parked.any_set(first, pages),
            segment.free.count_ones(),
        );
        if may_keep && !any_parked {
            self.make_room(state, base, own_free, pages);
        }
        let keep = if any_parked || !may_keep {
            // Parked pages have no memory to keep; the run is decommitted whole.
            0
        } else {
            self.config
                .max_free_pages
                .saturating_sub(state.free_pages)
                .min(pages)
        };
        let decommit = pages - keep;
        if decommit > 0 {
            let at = addr + keep * self.page;
            self.vm.decommit(at, decommit * self.page)?;
        }
        let segment = state.segments.get_mut(&base).expect("located");
        let parked = segment.parked.count_ones();
        segment.parked.clear_range(first, pages);
        let unparked = parked - segment.parked.count_ones();
        if keep > 0 {
            state.keeps += 1;
            segment.last_kept = state.keeps;
        }
        state.change(base, first, pages, |segment| {
            segment.free.set_range(first, keep);
            segment.decommitted.set_range(first + keep, decommit);
        });
        state.free_pages += keep;
        state.used_pages -= pages;
        state.parked_pages -= unparked;
        state.decommitted_pages += (decommit - unparked) as u64;
        self.refile_or_release(state, base);
        Ok(())
    }

    /// Makes room under `max_free_pages` for `pages` pages released into the segment at
    /// `releasing` (which has `own_free` free pages), if other segments' free pages can
    /// give all of it: their free runs are decommitted whole, the segments kept into
    /// longest ago first. Pages just released are the likeliest to be asked for again (a
    /// freed block's size comes back); pages kept since long ago are the fragments no
    /// request took. Decommitting those instead of the new ones cut the mixed W1 over
    /// 10,000 live blocks from 0.110 to 0.039 pages decommitted per step. Otherwise, or if
    /// the OS refuses one of these decommits (the pages done so far stay decommitted: they
    /// were free, no holder sees it; `stats()` counts the refusal), the release decommits
    /// its own excess, as it would have.
    fn make_room(&self, state: &mut State, releasing: usize, own_free: usize, pages: usize) {
        let wanted = (state.free_pages + pages).saturating_sub(self.config.max_free_pages);
        if wanted == 0 || state.free_pages - own_free < wanted {
            return;
        }
        let mut stale: Vec<(u64, usize)> = (state.segments.iter())
            .filter(|&(&base, segment)| base != releasing && segment.free.count_ones() > 0)
            .map(|(&base, segment)| (segment.last_kept, base))
            .collect();
        stale.sort_unstable();
        let mut room = 0;
        for (_, base) in stale {
            while room < wanted {
                let Some((first, len)) = state.segments[&base].free.runs().next() else {
                    break;
                };
                if self.decommit_free_run(state, base, first, len).is_err() {
                    state.refused_stale_decommits += 1;
                    self.refile_or_release(state, base);
                    return;
                }
                room += len;
            }
            self.refile_or_release(state, base);
            if room >= wanted {
                return;
            }
        }
    }

    fn release_large(&self, state: &mut State, base: usize) -> Result<()> {
        let large = &state.large[&base];
        let slots = large.slots.as_ref().map_or(0, SlotAllocator::in_use);
        if slots > 0 {
            // Unwind data registered from those slots would point at unmapped memory.
            return Err(Error::SecondaryInUse {
                segment: base,
                slots,
            });
        }
        let pages = large.pages;
        let parked = if large.parked { pages } else { 0 };
        self.vm.release(base)?;
        state.large.remove(&base);
        state.used_pages -= pages;
        state.parked_pages -= parked;
        state.segments_released += 1;
        Ok(())
    }

    /// Refiles a segment, releasing it to the OS if nothing in it is in use. A failed
    /// release leaves it on the decommitted list, consistent, to be retried later.
    fn refile_or_release(&self, state: &mut State, base: usize) {
        if state.refile(base) {
            return;
        }
        if self.vm.release(base).is_ok() {
            state.remove_segment(base);
            state.segments_released += 1;
        } else {
            let segment = state.segments.get_mut(&base).expect("kept");
            let old = core::mem::replace(&mut segment.list, SegmentList::Decommitted);
            state.list(old).remove(&base);
            state.list(SegmentList::Decommitted).insert(base);
            state.refile_by_room(base);
        }
    }

    /// Decommits allocated pages while their holder keeps them (ChakraCore's
    /// `DecommitPages`): their memory goes back and they fault if touched or run, but their
    /// addresses stay reserved until they are released, so a stale entry point cannot land
    /// in reused memory. A large allocation is decommitted whole.
    pub fn decommit_pages(&self, addr: usize, pages: usize) -> Result<()> {
        let mut state = lock(&self.state);
        let (place, first) = self.locate_allocated(&state, addr, pages, true)?;
        self.vm.decommit(addr, pages * self.page)?;
        let newly = match place {
            Place::Segment(base) => {
                let segment = state.segments.get_mut(&base).expect("located");
                let before = segment.parked.count_ones();
                segment.parked.set_range(first, pages);
                segment.parked.count_ones() - before
            }
            Place::Large(base) => {
                let large = state.large.get_mut(&base).expect("located");
                let newly = if large.parked { 0 } else { pages };
                large.parked = true;
                newly
            }
        };
        state.parked_pages += newly;
        state.decommitted_pages += newly as u64;
        Ok(())
    }

    /// Decommits every free page kept committed (the idle-decommit of other allocators),
    /// releasing segments that end up unused. Returns the pages decommitted. If the OS
    /// refuses midway, the pages done so far stay decommitted and the error is returned.
    pub fn decommit_free_pages(&self) -> Result<usize> {
        let mut state = lock(&self.state);
        let bases: Vec<usize> = state
            .segments
            .iter()
            .filter(|(_, segment)| segment.free.count_ones() > 0)
            .map(|(&base, _)| base)
            .collect();
        let mut total = 0;
        for base in bases {
            let runs: Vec<(usize, usize)> = state.segments[&base].free.runs().collect();
            for (first, pages) in runs {
                self.decommit_free_run(&mut state, base, first, pages)?;
                total += pages;
            }
            self.refile_or_release(&mut state, base);
        }
        Ok(total)
    }

    /// Decommits the free run of `len` pages at page `first` of the segment at `base`; the
    /// caller refiles the segment.
    fn decommit_free_run(
        &self,
        state: &mut State,
        base: usize,
        first: usize,
        len: usize,
    ) -> Result<()> {
        self.vm
            .decommit(base + first * self.page, len * self.page)?;
        state.change(base, first, len, |segment| {
            segment.decommitted.set_range(first, len);
            segment.free.clear_range(first, len);
        });
        state.free_pages -= len;
        state.decommitted_pages += len as u64;
        Ok(())
    }

    // ---- protection ---------------------------------------------------------------------

    /// Changes the protection of allocated pages if they all have `expected_old` (ChakraCore's
    /// `ProtectPages`): the range is page-aligned, in one segment's code pages (or one large
    /// allocation) and allocated, else a typed error and nothing changes. On `MapJit` and
    /// `DualMap` segments no system call is made.
    pub fn protect_pages(
        &self,
        addr: usize,
        pages: usize,
        protection: Protection,
        expected_old: Protection,
    ) -> Result<()> {
        {
            let state = lock(&self.state);
            self.locate_allocated(&state, addr, pages, false)?;
        }
        self.vm
            .protect_expecting(addr, pages * self.page, protection, expected_old)?;
        // Every segment was reserved with the allocator's own strategy.
        let strategy = self.vm.strategy();
        self.protects.record(strategy.protect_makes_syscall());
        Ok(())
    }

    // ---- secondary area -----------------------------------------------------------------

    /// One slot in the secondary area of the segment holding `addr`.
    pub fn alloc_secondary(&self, addr: usize) -> Result<SecondarySlot> {
        self.alloc_secondary_bytes(addr, self.config.secondary_slot_size)
    }

    /// A run of slots holding `bytes`, in the secondary area of the segment holding `addr`.
    pub fn alloc_secondary_bytes(&self, addr: usize, bytes: usize) -> Result<SecondarySlot> {
        let slots = self.secondary_slots(bytes)?;
        let mut state = lock(&self.state);
        let base = match state.place_of(addr, self.segment_bytes()) {
            Some(Place::Segment(base) | Place::Large(base)) => base,
            None => return Err(Error::NotInSegment { addr }),
        };
        self.take_slots(&mut state, base, slots)
    }

    /// Takes `slots` slots in the segment (or large segment) at `base`.
    fn take_slots(&self, state: &mut State, base: usize, slots: usize) -> Result<SecondarySlot> {
        let exhausted = Error::SecondaryExhausted { segment: base };
        let (area, is_segment) = match state.segments.get_mut(&base) {
            Some(segment) => (segment.slots.as_mut(), true),
            None => (
                state.large.get_mut(&base).and_then(|l| l.slots.as_mut()),
                false,
            ),
        };
        let area = area.ok_or(exhausted.clone())?;
        if !area.can_fit(slots) {
            return Err(exhausted);
        }
        if !area.committed {
            let (addr, bytes) = area.area();
            self.vm.commit(addr, bytes, Protection::ReadWrite)?;
            area.committed = true;
        }
        let addr = area.alloc(slots).ok_or(exhausted)?;
        let size = slots * area.slot_size();
        if is_segment {
            state.refile(base);
        }
        Ok(SecondarySlot {
            addr,
            size,
            segment: base,
        })
    }

    /// Frees a run of slots `alloc_secondary` handed out (by its first address); `NotASlot`
    /// for anything else.
    pub fn release_secondary(&self, slot_addr: usize) -> Result<()> {
        let mut state = lock(&self.state);
        let not_a_slot = Error::NotASlot { addr: slot_addr };
        let place = state
            .place_of(slot_addr, self.segment_bytes())
            .ok_or(not_a_slot.clone())?;
        let slots = match place {
            Place::Segment(base) => state
                .segments
                .get_mut(&base)
                .expect("placed")
                .slots
                .as_mut(),
            Place::Large(base) => state.large.get_mut(&base).expect("placed").slots.as_mut(),
        };
        let released = slots.is_some_and(|slots| slots.release(slot_addr));
        if !released {
            return Err(not_a_slot);
        }
        if let Place::Segment(base) = place {
            let was_full = state.segments[&base].list == SegmentList::Full;
            self.refile_or_release(&mut state, base);
            let now_full = state.segments.get(&base).map(|s| s.list) == Some(SegmentList::Full);
            if was_full && !now_full && state.segments.contains_key(&base) {
                state.secondary_changes += 1;
            }
        }
        Ok(())
    }

    /// Whether the segment holding `addr` can still hand out a secondary slot.
    pub fn can_alloc_secondary(&self, addr: usize) -> bool {
        let state = lock(&self.state);
        let slots = match state.place_of(addr, self.segment_bytes()) {
            Some(Place::Segment(base)) => state.segments[&base].slots.as_ref(),
            Some(Place::Large(base)) => state.large[&base].slots.as_ref(),
            None => None,
        };
        slots.is_some_and(|slots| !slots.is_exhausted())
    }

    /// How many times a segment has left the full list because a secondary slot was freed.
    pub fn secondary_state_changes(&self) -> u64 {
        lock(&self.state).secondary_changes
    }

    // ---- introspection ------------------------------------------------------------------

    /// The list the segment holding `addr` is on (`None` for large segments and foreign
    /// addresses).
    pub fn segment_list(&self, addr: usize) -> Option<SegmentList> {
        let state = lock(&self.state);
        match state.place_of(addr, self.segment_bytes())? {
            Place::Segment(base) => Some(state.segments[&base].list),
            Place::Large(_) => None,
        }
    }

    /// A snapshot of the allocator's state and counters.
    pub fn stats(&self) -> PageAllocatorStats {
        let state = lock(&self.state);
        let vm = self.vm.stats();
        let count = |list: SegmentList| state.lists[list as usize].len();
        let all_slots = state
            .segments
            .values()
            .filter_map(|s| s.slots.as_ref())
            .chain(state.large.values().filter_map(|l| l.slots.as_ref()));
        let (slots_used, slots_total) = all_slots.fold((0, 0), |(used, total), slots| {
            (used + slots.in_use(), total + slots.capacity())
        });
        let mut stats = PageAllocatorStats {
            reserved_bytes: vm.reserved_bytes,
            committed_bytes: vm.committed_bytes,
            used_bytes: state.used_pages * self.page,
            free_bytes: state.free_pages * self.page,
            parked_bytes: state.parked_pages * self.page,
            segments: SegmentCounts {
                partial: count(SegmentList::Partial),
                full: count(SegmentList::Full),
                empty: count(SegmentList::Empty),
                decommitted: count(SegmentList::Decommitted),
                large: state.large.len(),
            },
            segments_created: state.segments_created,
            segments_released: state.segments_released,
            decommitted_pages: state.decommitted_pages,
            refused_stale_decommits: state.refused_stale_decommits,
            secondary_slots_used: slots_used,
            secondary_slots_total: slots_total,
            ..PageAllocatorStats::default()
        };
        self.protects.fill(&mut stats);
        stats
    }

    /// Checks the bookkeeping against itself and against the OS layer: the lists partition
    /// the segments by state, no page is both free and decommitted, the page counts match the
    /// bitmaps, and every page the bitmaps call committed is committed in the OS layer and
    /// every decommitted page is not. For tests and fuzzing; takes the lock.
    pub fn check_invariants(&self) -> core::result::Result<(), String> {
        let state = lock(&self.state);
        crate::invariants::check(&state, &self.vm, &self.config)
    }
}

static_assertions::assert_impl_all!(PageAllocator<codeheap_virtual_alloc::sim::SimOs>: Send, Sync);
