//! The consistency check behind [`Heap::check_invariants`], for tests, loom models and
//! fuzzers, and a hook that breaks the bookkeeping on purpose so they can show it is caught.
//!
//! What must hold whenever the heap's lock is free:
//!
//! * **Pages.** Every page in the table is page-aligned, indexed by its address, and where
//!   its state calls for: a bucket list (or its list of pages without unwind room) holds
//!   pages with free chunks that are not empty, pages without a free chunk are set aside
//!   (marked full, on no list), the spare list holds empty pages, the parked list pages
//!   decommitted by `decommit_all` that still hold blocks (or none, if the OS refused to
//!   take them back). A listed page is on exactly one list, at the slot it records. With
//!   power-of-two classes, on a page of bucket `b` the free chunks come in aligned groups of
//!   `2^b` (what lets allocation take any free chunk); with chunk classes, a page with free
//!   chunks is filed under the length of its longest free run.
//! * **Blocks.** Every live block's chunks are allocated in its page's bitmap, its first
//!   chunk marks a start and no other chunk of it does; every start belongs to a block; the
//!   blocks of a page and the freed blocks kept from it (`freed.rs`) cover exactly its
//!   allocated chunks, none twice. Kept blocks have no start bit, are within the cache's
//!   limits, count in their page's `kept_chunks`, and sit only on pages that still hold a
//!   live block and are filed for allocation. A page's open
//!   write sessions are its blocks being written. Large blocks are recorded in `large`, whole
//!   pages each, and overlap neither each other nor a small page; freed large blocks kept
//!   for reuse (`kept_large.rs`) are within the cache's budget, in no record and overlap no
//!   block, small page or other kept block. Block records: every
//!   live record is found by its address at its own place (through its page's chunk places,
//!   or `large`), and every place of the slab is live or vacant and listed unused once (a
//!   handle's place is trusted by its id, so a vacant place must hold none).
//! * **Memory.** Heap pages are committed and execute-read in the OS layer's books
//!   (read-write under `Protect` while open for writing, which every page with a session
//!   is), parked ones are not
//!   committed; free chunks and kept freed blocks hold traps, and so does every block past
//!   its size. Kept large blocks are committed, execute-read and all traps.
//! * **Below.** The page allocator's own check passes, and the pages it counts as handed out
//!   (and parked) are exactly the heap's.
//! * **Counters.** Allocations minus frees are the live blocks; pages acquired minus pages
//!   released are the pages held.

use std::collections::BTreeMap;

use codeheap_virtual_alloc::{Os, PageState, Protection, WxStrategy};

use crate::block::{BlockRecord, BlockState, Home};
use crate::config::SizeClasses;
use crate::freed::{FreedBlocks, MAX_KEPT_CHUNKS};
use crate::heap::{Heap, HeapCore};
use crate::kept_large::MAX_KEPT_LARGE_PAGES;
use crate::page::{Page, PageId, PageList};
use crate::records::Place;
use crate::size_class::CHUNK;
use crate::state::HeapState;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

impl<O: Os> Heap<O> {
    /// Checks the heap's bookkeeping against itself, against the page allocator and against
    /// the OS layer (see the list in `heap/src/invariants.rs`): pages on the lists their
    /// state calls for, blocks allocated in their page's bitmap and never overlapping, large
    /// blocks recorded, protections, traps in free memory, counters. Returns the first
    /// violation found. Takes the heap's lock; for tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.core.check_invariants(&self.state())
    }

    /// Breaks the bookkeeping on purpose: marks the first chunk of the small block at
    /// `block_addr` free, as a stray write to the bitmap would. Returns whether there was
    /// such a block. Only for showing that [`check_invariants`](Heap::check_invariants)
    /// (and the fuzzers built on it) catch corruption; the heap is unusable afterwards.
    #[doc(hidden)]
    pub fn corrupt_chunk_bitmap_for_test(&self, block_addr: usize) -> bool {
        let mut state = self.state();
        let Some(place) = state.place_at(block_addr) else {
            return false;
        };
        let record = *state.blocks.at(place);
        let Home::Small { page, first_chunk } = record.home else {
            return false;
        };
        (state.pages.chunk_bits_mut(page).free).set_range(usize::from(first_chunk), 1);
        true
    }
}

impl<O: Os> HeapCore<O> {
    /// [`Heap::check_invariants`].
    pub(crate) fn check_invariants(&self, state: &HeapState) -> Result<(), String> {
        self.check_lists(state)?;
        let kept = self.check_kept(state)?;
        let mut held_pages = 0;
        let mut parked_pages = 0;
        for (id, page) in state.pages.live() {
            let kept_here = kept.get(&id).map_or(&[][..], Vec::as_slice);
            self.check_page(state, id, page, kept_here)?;
            held_pages += 1;
            parked_pages += usize::from(page.list == PageList::Parked);
        }
        state
            .blocks
            .check()
            .map_err(|err| format!("block records: {err}"))?;
        for (place, record) in state.blocks.iter() {
            self.check_block(state, place, record)?;
        }
        let (large_pages, large_parked) = self.check_large(state)?;
        held_pages += large_pages;
        parked_pages += large_parked;
        held_pages += self.check_kept_large(state)?;

        self.pages
            .check_invariants()
            .map_err(|err| format!("page allocator: {err}"))?;
        let below = self.pages.stats();
        ensure(below.used_bytes == held_pages * self.page, || {
            format!(
                "the page allocator has {} pages handed out, the heap holds {held_pages}",
                below.used_bytes / self.page
            )
        })?;
        ensure(below.parked_bytes == parked_pages * self.page, || {
            format!(
                "the page allocator has {} pages parked, the heap {parked_pages}",
                below.parked_bytes / self.page
            )
        })?;

        let counters = &state.counters;
        ensure(
            counters.allocs.checked_sub(counters.frees) == Some(state.blocks.len() as u64),
            || {
                format!(
                    "{} allocations and {} frees, {} live blocks",
                    counters.allocs,
                    counters.frees,
                    state.blocks.len()
                )
            },
        )?;
        ensure(
            counters.pages_acquired.checked_sub(counters.pages_released) == Some(held_pages as u64),
            || {
                format!(
                    "{} pages acquired and {} released, {held_pages} held",
                    counters.pages_acquired, counters.pages_released
                )
            },
        )
    }

    /// The kept freed blocks, by page as (first chunk, chunks): each on a live page, and no
    /// more of a size than the cache keeps.
    fn check_kept(
        &self,
        state: &HeapState,
    ) -> Result<BTreeMap<PageId, Vec<(usize, usize)>>, String> {
        let live: BTreeMap<PageId, &Page> = state.pages.live().collect();
        let mut by_page: BTreeMap<PageId, Vec<(usize, usize)>> = BTreeMap::new();
        let mut per_size = [0; MAX_KEPT_CHUNKS + 1];
        for (id, first, chunks) in state.freed.iter() {
            per_size[chunks] += 1;
            ensure(per_size[chunks] <= FreedBlocks::limit(chunks), || {
                format!(
                    "more than {} freed blocks of {chunks} chunks are kept",
                    FreedBlocks::limit(chunks)
                )
            })?;
            ensure(live.contains_key(&id), || {
                format!("a freed block is kept on page id {id}, which is not live")
            })?;
            by_page.entry(id).or_default().push((first, chunks));
        }
        Ok(by_page)
    }

    /// Every list entry is a live page that knows it is there; every live page but the
    /// full ones (set aside on no list) is listed.
    fn check_lists(&self, state: &HeapState) -> Result<(), String> {
        let pages = &state.pages;
        let buckets = pages.buckets.len();
        let live: BTreeMap<PageId, &Page> = pages.live().collect();
        let mut listed = 0;
        let lists = (0..buckets)
            .map(|b| (PageList::Bucket, Some(b), &pages.buckets[b]))
            .chain(
                (0..buckets).map(|b| (PageList::NoUnwindRoom, Some(b), &pages.no_unwind_room[b])),
            )
            .chain([
                (PageList::Spare, None, &pages.spare),
                (PageList::Parked, None, &pages.parked),
            ]);
        for (list, bucket, ids) in lists {
            for (slot, &id) in ids.iter().enumerate() {
                let page = live.get(&id).ok_or_else(|| {
                    format!("{list:?} list holds page id {id}, which is not live")
                })?;
                ensure(page.list == list && page.slot() == slot, || {
                    format!(
                        "page {:#x} is at slot {slot} of the {list:?} list but records {:?} slot {}",
                        page.addr,
                        page.list,
                        page.slot()
                    )
                })?;
                ensure(bucket.is_none_or(|b| b == page.bucket()), || {
                    format!(
                        "page {:#x} of bucket {} is on the {list:?} list of bucket {bucket:?}",
                        page.addr,
                        page.bucket()
                    )
                })?;
                listed += 1;
            }
        }
        if let Some((list, index)) = pages.misrecorded_list() {
            return Err(format!(
                "{list:?} list {index}: its pages and the record of whether it has any disagree"
            ));
        }
        let set_aside = live
            .values()
            .filter(|page| page.list == PageList::Full)
            .count();
        ensure(listed + set_aside == live.len(), || {
            format!(
                "{} live pages, {listed} list entries and {set_aside} full pages",
                live.len()
            )
        })?;
        ensure(state.page_index.len() == live.len(), || {
            format!(
                "{} live pages, {} in the address index",
                live.len(),
                state.page_index.len()
            )
        })?;
        match state.pages.missized_books() {
            Some([entries, words, places]) => Err(format!(
                "{entries} page table entries with {words} bitmap words and {places} chunk places"
            )),
            None => Ok(()),
        }
    }

    fn check_page(
        &self,
        state: &HeapState,
        id: PageId,
        page: &Page,
        kept: &[(usize, usize)],
    ) -> Result<(), String> {
        let addr = page.addr;
        let chunks = self.page / CHUNK;
        let bits = state.pages.chunk_bits(id);
        ensure(addr.is_multiple_of(self.page), || {
            format!("page {addr:#x} is not page-aligned")
        })?;
        ensure(state.page_index.get(&addr) == Some(&id), || {
            format!(
                "page {addr:#x} (id {id}) is indexed as {:?}",
                state.page_index.get(&addr)
            )
        })?;
        ensure(page.bucket() < state.pages.buckets.len(), || {
            format!(
                "page {addr:#x} is in bucket {}, beyond the last",
                page.bucket()
            )
        })?;
        ensure(
            usize::from(page.free_chunks) == bits.free.count_ones(),
            || {
                format!(
                    "page {addr:#x} counts {} free chunks, its bitmap {}",
                    page.free_chunks,
                    bits.free.count_ones()
                )
            },
        )?;
        let (empty, full) = (page.is_empty(), page.is_full());
        let placed = match page.list {
            PageList::Bucket | PageList::NoUnwindRoom => !full && !empty,
            PageList::Full => full,
            PageList::Spare => empty && page.writers == 0,
            // Empty only if the OS refused to take it back (retried by `decommit_all`).
            PageList::Parked => page.writers == 0,
        };
        ensure(placed, || {
            format!(
                "page {addr:#x} is on the {:?} list with {} of {chunks} chunks free and {} open sessions",
                page.list,
                bits.free.count_ones(),
                page.writers
            )
        })?;
        // Power-of-two classes: free chunks come in aligned groups of the bucket's size.
        // Chunk classes: a page with free chunks is filed by its longest free run.
        let group = match self.classes {
            SizeClasses::PowerOfTwo => 1 << page.bucket(),
            SizeClasses::Chunks => 1,
        };
        if self.classes == SizeClasses::Chunks
            && matches!(page.list, PageList::Bucket | PageList::NoUnwindRoom)
        {
            let longest = bits.free.longest_run();
            ensure(longest == page.bucket(), || {
                format!(
                    "page {addr:#x} with a longest free run of {longest} chunks is filed under {}",
                    page.bucket()
                )
            })?;
        }
        for chunk in (0..chunks).step_by(group) {
            let any = bits.free.any_set(chunk, group);
            ensure(!any || bits.free.all_set(chunk, group), || {
                format!(
                    "page {addr:#x} of bucket {}: chunks {chunk}..{} are partly free",
                    page.bucket(),
                    chunk + group
                )
            })?;
        }

        // The blocks of the page, one per start bit, and the freed blocks kept from it cover
        // exactly the allocated chunks, none twice.
        let mut owned = vec![false; chunks];
        let mut own = |first: usize, n: usize, what: &str| {
            let range = first..first + n;
            ensure(
                range.end <= chunks && !owned[range.clone()].contains(&true),
                || {
                    format!(
                        "{what} at chunk {first} of page {addr:#x} overlaps another or the page's end"
                    )
                },
            )?;
            owned[range].fill(true);
            Ok::<(), String>(())
        };
        let mut covered = 0;
        let mut writing = 0;
        for chunk in (0..chunks).filter(|&c| bits.starts.get(c)) {
            let block = addr + chunk * CHUNK;
            let record = (state.pages.place_at(id, chunk))
                .and_then(|place| state.blocks.live(place))
                .map(|place| state.blocks.at(place))
                .ok_or_else(|| {
                    format!("page {addr:#x} marks a block start at {block:#x}, which has no record")
                })?;
            ensure(record.addr == block, || {
                format!(
                    "page {addr:#x} finds the record of the block at {:#x} for {block:#x}",
                    record.addr
                )
            })?;
            ensure(
                record.home
                    == (Home::Small {
                        page: id,
                        first_chunk: chunk as u16,
                    }),
                || {
                    format!(
                        "the block at {block:#x} records its home as {:?}, not page id {id} chunk {chunk}",
                        record.home
                    )
                },
            )?;
            let n = self.capacity_of(state, record) / CHUNK;
            ensure(chunk + n <= chunks, || {
                format!("the block at {block:#x} runs past the end of its page")
            })?;
            ensure(!bits.free.any_set(chunk, n), || {
                format!("the block at {block:#x} has chunks marked free in its page's bitmap")
            })?;
            ensure(n == 1 || !bits.starts.any_set(chunk + 1, n - 1), || {
                format!("another block starts inside the block at {block:#x}")
            })?;
            own(chunk, n, "the block")?;
            ensure(
                chunk.is_multiple_of(group) && n.is_multiple_of(group),
                || {
                    format!(
                        "the block at {block:#x} ({n} chunks at chunk {chunk}) is not aligned to bucket {} of its page",
                        page.bucket()
                    )
                },
            )?;
            ensure(
                (record.state == BlockState::Parked) == (page.list == PageList::Parked),
                || {
                    format!(
                        "the block at {block:#x} is {:?} on a page on the {:?} list",
                        record.state, page.list
                    )
                },
            )?;
            covered += n;
            writing += u32::from(record.state == BlockState::Writing);
        }
        let mut kept_chunks = 0;
        for &(first, n) in kept {
            own(first, n, "a kept freed block")?;
            ensure(
                !bits.free.any_set(first, n) && !bits.starts.any_set(first, n),
                || {
                    format!(
                        "the kept freed block at chunk {first} of page {addr:#x} has chunks marked free or a block start"
                    )
                },
            )?;
            ensure(
                first.is_multiple_of(group) && n.is_multiple_of(group),
                || {
                    format!(
                        "the kept freed block at chunk {first} of page {addr:#x} is not aligned to bucket {}",
                        page.bucket()
                    )
                },
            )?;
            kept_chunks += n;
        }
        ensure(usize::from(page.kept_chunks) == kept_chunks, || {
            format!(
                "page {addr:#x} counts {} kept chunks, the cache holds {kept_chunks} of it",
                page.kept_chunks
            )
        })?;
        // A page is never held by kept blocks alone, nor kept on a list that is not for
        // allocation.
        ensure(
            kept.is_empty()
                || (covered > 0
                    && matches!(
                        page.list,
                        PageList::Bucket | PageList::NoUnwindRoom | PageList::Full
                    )),
            || {
                format!(
                    "page {addr:#x} on the {:?} list has kept freed blocks and {covered} chunks of live ones",
                    page.list
                )
            },
        )?;
        let allocated = chunks - bits.free.count_ones();
        ensure(covered + kept_chunks == allocated, || {
            format!(
                "page {addr:#x} has {allocated} chunks allocated, its blocks cover {covered} and kept freed blocks {kept_chunks}"
            )
        })?;
        ensure(u32::from(page.writers) == writing, || {
            format!(
                "page {addr:#x} counts {} open write sessions, {writing} of its blocks are being written",
                page.writers
            )
        })?;

        ensure(page.writers == 0 || page.open, || {
            format!("page {addr:#x} has open sessions but is not open for writing")
        })?;
        if page.list == PageList::Parked {
            return self.expect_page_state(addr, PageState::Reserved);
        }
        self.expect_page_state(addr, PageState::Committed(self.protection(page.open)))?;
        let mut bytes = vec![0; self.page];
        self.vm()
            .read(addr, &mut bytes)
            .map_err(|err| format!("page {addr:#x} cannot be read: {err}"))?;
        for (start, n) in bits.free.runs() {
            let range = start * CHUNK..(start + n) * CHUNK;
            ensure(self.arch.is_trap_filled(&bytes[range.clone()]), || {
                format!(
                    "free chunks {start}..{} of page {addr:#x} do not hold traps",
                    start + n
                )
            })?;
        }
        for &(first, n) in kept {
            ensure(
                self.arch
                    .is_trap_filled(&bytes[first * CHUNK..(first + n) * CHUNK]),
                || {
                    format!(
                        "the kept freed block at chunk {first} of page {addr:#x} does not hold traps"
                    )
                },
            )?;
        }
        for chunk in (0..chunks).filter(|&c| bits.starts.get(c)) {
            let place = state.pages.place_at(id, chunk).expect("checked above");
            let record = state.blocks.at(place);
            let at = chunk * CHUNK;
            let capacity = self.capacity_of(state, record);
            self.check_untouched(addr + at, record, &bytes[at..at + capacity])?;
        }
        Ok(())
    }

    /// The protection a held page has in the OS layer's books: read-write while it is open
    /// for writing, under `Protect`.
    fn protection(&self, open: bool) -> Protection {
        if self.strategy == WxStrategy::Protect && open {
            Protection::ReadWrite
        } else {
            Protection::ExecuteRead
        }
    }

    fn expect_page_state(&self, addr: usize, expected: PageState) -> Result<(), String> {
        self.expect_pages_state(addr, 1, expected)
    }

    /// Each of the `pages` pages from `addr` is in state `expected`, as the OS layer says
    /// (its runs of same-state pages: a large block costs one walk, not a query per page).
    fn expect_pages_state(
        &self,
        addr: usize,
        pages: usize,
        expected: PageState,
    ) -> Result<(), String> {
        let runs = self
            .vm()
            .query_range(addr, pages * self.page)
            .map_err(|err| format!("page {addr:#x} is unknown to the OS layer: {err}"))?;
        for run in runs {
            ensure(run.state == expected, || {
                format!(
                    "page {:#x} is {:?}, expected {expected:?}",
                    run.base, run.state
                )
            })?;
        }
        Ok(())
    }

    /// What a block's code cannot have touched holds traps: everything past its size (to
    /// a whole instruction word). Once finalized, the partial instruction word right after
    /// the code is zeroed.
    fn check_untouched(
        &self,
        addr: usize,
        record: &BlockRecord,
        bytes: &[u8],
    ) -> Result<(), String> {
        let dirty = record.dirty_len(self.arch.instruction_alignment(), bytes.len());
        if record.state == BlockState::Finalized {
            ensure(bytes[record.size()..dirty].iter().all(|&b| b == 0), || {
                format!("the partial word after the block at {addr:#x} is not zeroed")
            })?;
        }
        ensure(self.arch.is_trap_filled(&bytes[dirty..]), || {
            format!(
                "the block at {addr:#x} (bytes {dirty}..{} of {}) does not hold traps",
                bytes.len(),
                record.size
            )
        })
    }

    fn check_block(
        &self,
        state: &HeapState,
        place: Place,
        record: &BlockRecord,
    ) -> Result<(), String> {
        let addr = record.addr;
        ensure(state.place_at(addr) == Some(place), || {
            format!(
                "the block at {addr:#x}, recorded at {place:?}, is found by address at {:?}",
                state.place_at(addr)
            )
        })?;
        ensure(record.size > 0, || {
            format!("the block at {addr:#x} has size 0")
        })?;
        match record.home {
            Home::Small { page, first_chunk } => {
                let first_chunk = usize::from(first_chunk);
                let live = state.pages.live().any(|(id, _)| id == page);
                ensure(live, || {
                    format!("the block at {addr:#x} lives on page id {page}, which is not live")
                })?;
                let bits = state.pages.chunk_bits(page);
                let page = state.pages.get(page);
                ensure(first_chunk < bits.free.len(), || {
                    format!("the block at {addr:#x} records chunk {first_chunk}, past its page")
                })?;
                ensure(addr == page.addr + first_chunk * CHUNK, || {
                    format!(
                        "the block at {addr:#x} records chunk {first_chunk} of page {:#x}",
                        page.addr
                    )
                })?;
                ensure(bits.starts.get(first_chunk), || {
                    format!("the block at {addr:#x} has no start mark in its page's bitmap")
                })?;
                ensure(record.size() <= self.page, || {
                    format!(
                        "the small block at {addr:#x} has size {}, past a page",
                        record.size
                    )
                })?;
                ensure(record.large_writers == 0, || {
                    format!("the small block at {addr:#x} counts large-block sessions")
                })?;
                // A floor only where a shrink under power-of-two classes set one, above the
                // class of the size and within the page.
                let class = self.capacity_of_size(record.size());
                let floor = CHUNK << record.floor;
                ensure(
                    record.floor == 0
                        || (self.classes == SizeClasses::PowerOfTwo
                            && class < floor
                            && floor <= self.page),
                    || {
                        format!(
                            "the small block at {addr:#x} of {} bytes has a floor of {floor} bytes",
                            record.size
                        )
                    },
                )?;
                ensure(!state.large.contains_key(&addr), || {
                    format!("the small block at {addr:#x} is recorded as large")
                })
            }
            Home::Large => {
                let large = state.large.get(&addr);
                ensure(large.map(|large| large.place) == Some(place), || {
                    format!("the large block at {addr:#x} is recorded in `large` as {large:?}")
                })?;
                // Allocated with the pages its size (past a page) rounds up to; `shrink` may
                // leave it smaller, even within a page, and with pages it could not give back.
                let pages = large.map_or(0, |large| large.pages);
                ensure(pages >= record.size().div_ceil(self.page), || {
                    format!(
                        "the large block at {addr:#x} has size {} in {pages} pages",
                        record.size
                    )
                })?;
                let write_addr = self.vm().writable_address(addr).ok();
                ensure(large.map(|large| large.write_addr) == write_addr, || {
                    format!(
                        "the large block at {addr:#x} is written at {write_addr:?}, `large` says {large:?}"
                    )
                })?;
                let writing = u8::from(record.state == BlockState::Writing);
                ensure(record.large_writers == writing, || {
                    format!(
                        "the large block at {addr:#x} counts {} sessions, state {:?}",
                        record.large_writers, record.state
                    )
                })
            }
        }
    }

    /// Large blocks: each recorded in `large` has a record, none overlaps another or a small
    /// page, and its pages are committed (or parked) as its state says. Returns the pages
    /// held and parked.
    fn check_large(&self, state: &HeapState) -> Result<(usize, usize), String> {
        let (mut held, mut parked) = (0, 0);
        let mut end_of_previous = 0;
        for (&addr, large) in &state.large {
            let place = large.place;
            let record = (state.blocks.live(place))
                .map(|place| state.blocks.at(place))
                .ok_or_else(|| format!("`large` lists a block at {addr:#x} that has no record"))?;
            ensure(record.addr == addr, || {
                format!(
                    "`large` lists a block at {addr:#x} whose record is the block at {:#x}",
                    record.addr
                )
            })?;
            let capacity = self.capacity_of(state, record);
            let pages = capacity / self.page;
            if record.home != Home::Large {
                return Err(format!("`large` lists the small block at {addr:#x}"));
            }
            ensure(addr >= end_of_previous, || {
                format!("the large block at {addr:#x} overlaps the one before it")
            })?;
            end_of_previous = addr + capacity;
            let page_inside =
                (0..pages).find(|i| state.page_index.contains_key(&(addr + i * self.page)));
            ensure(page_inside.is_none(), || {
                format!("the large block at {addr:#x} overlaps a small-block page")
            })?;
            ensure(self.pages.is_allocated(addr, pages), || {
                format!("the large block at {addr:#x} is not held from the page allocator")
            })?;
            let expected = match record.state {
                BlockState::Parked => PageState::Reserved,
                _ => PageState::Committed(self.protection(record.open)),
            };
            self.expect_pages_state(addr, pages, expected)?;
            if record.state != BlockState::Parked {
                let mut bytes = vec![0; capacity];
                self.vm()
                    .read(addr, &mut bytes)
                    .map_err(|err| format!("large block {addr:#x} cannot be read: {err}"))?;
                self.check_untouched(addr, record, &bytes)?;
            } else {
                parked += pages;
            }
            held += pages;
        }
        Ok((held, parked))
    }

    /// Kept large blocks: within the budget, on pages no block or small page has, at the
    /// write address the OS layer gives, committed, execute-read and full of traps. Returns
    /// the pages they hold.
    fn check_kept_large(&self, state: &HeapState) -> Result<usize, String> {
        let kept = &state.kept_large;
        let counted: usize = kept.iter().map(|block| block.pages).sum();
        ensure(counted == kept.pages(), || {
            format!(
                "kept large blocks hold {counted} pages, the cache counts {}",
                kept.pages()
            )
        })?;
        ensure(kept.pages() <= MAX_KEPT_LARGE_PAGES, || {
            format!(
                "{} pages of large blocks kept, past the budget",
                kept.pages()
            )
        })?;
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for block in kept.iter() {
            let (addr, bytes) = (block.addr, block.pages * self.page);
            ensure(block.pages > 1 && kept.takes(block.pages), || {
                format!(
                    "the kept large block at {addr:#x} has {} pages",
                    block.pages
                )
            })?;
            let before = state.large.range(..addr + bytes).next_back();
            let overlapped =
                before.is_some_and(|(&other, large)| other + large.pages * self.page > addr);
            ensure(!overlapped, || {
                format!("the kept large block at {addr:#x} overlaps a live large block")
            })?;
            let page_inside =
                (0..block.pages).find(|i| state.page_index.contains_key(&(addr + i * self.page)));
            ensure(page_inside.is_none(), || {
                format!("the kept large block at {addr:#x} overlaps a small-block page")
            })?;
            ensure(self.pages.is_allocated(addr, block.pages), || {
                format!("the kept large block at {addr:#x} is not held from the page allocator")
            })?;
            let write_addr = self.vm().writable_address(addr).ok();
            ensure(write_addr == Some(block.write_addr), || {
                format!(
                    "the kept large block at {addr:#x} is written at {write_addr:?}, the cache says {:#x}",
                    block.write_addr
                )
            })?;
            let committed = PageState::Committed(Protection::ExecuteRead);
            self.expect_pages_state(addr, block.pages, committed)?;
            let mut bytes = vec![0; bytes];
            self.vm()
                .read(addr, &mut bytes)
                .map_err(|err| format!("kept large block {addr:#x} cannot be read: {err}"))?;
            ensure(self.arch.is_trap_filled(&bytes), || {
                format!("the kept large block at {addr:#x} holds something other than traps")
            })?;
            spans.push((addr, addr + bytes.len()));
        }
        spans.sort_unstable();
        let overlap = spans.windows(2).find(|pair| pair[0].1 > pair[1].0);
        ensure(overlap.is_none(), || {
            format!("kept large blocks overlap: {overlap:?}")
        })?;
        Ok(kept.pages())
    }
}
