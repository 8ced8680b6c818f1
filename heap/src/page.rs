//! A heap page: one OS page cut into 128-byte chunks, its bookkeeping kept here, outside
//! executable memory. Two bitmaps per page, in one table for all pages ([`ChunkBits`]):
//! `free` marks free chunks, `starts` the first chunk of each live block (so a block's
//! extent, and whether an address is its start, can be told without reading code memory).

use codeheap_page_allocator::bitmap::{Bitmap, Bits, words_for};

use crate::records::Place;
use crate::size_class::CHUNK;

/// Most chunks a page can have: 64 KiB pages of 128-byte chunks (the list bitmaps,
/// [`ListSet`], have one list per free-run length up to this).
pub(crate) const MAX_CHUNKS: usize = 512;

/// Index of a page in the heap's page table.
pub(crate) type PageId = u32;

/// Which list a page is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageList {
    /// Has free chunks; serves its bucket.
    Bucket,
    /// Has free chunks and serves its bucket, but its segment had no secondary room the
    /// last time a block with an unwind entry asked, so such blocks no longer probe it: each
    /// page is probed and refused at most once before it moves here, instead of on every
    /// allocation (ChakraCore sets such pages aside in its full list for the same reason).
    /// It goes back to `Bucket` when a block with an entry on it is freed (its slot frees
    /// room in the segment).
    NoUnwindRoom,
    /// No free chunk: set aside, on no list (a free puts it back on its bucket's), so the
    /// steady churn of a nearly full heap moves each page once, not twice.
    Full,
    /// Empty and kept for the next bucket that needs a page.
    Spare,
    /// Decommitted by `decommit_all`; only frees touch it until it is empty.
    Parked,
}

#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) addr: usize,
    /// Where the page is written (`addr` but for dual-mapped pages).
    pub(crate) write_addr: usize,
    /// The index of its list: its size bucket under power-of-two classes, the length of its
    /// longest free run under chunk classes (see [`Pages`]); at most [`MAX_CHUNKS`].
    bucket: u16,
    /// Free chunks (set bits of its `free` bitmap), kept so that "empty" and "full" are
    /// O(1) on every free.
    pub(crate) free_chunks: u16,
    /// Chunks in the page.
    pub(crate) chunks: u16,
    /// Chunks of freed blocks kept for reuse (`freed.rs`): taken, but no live block's.
    pub(crate) kept_chunks: u16,
    pub(crate) list: PageList,
    /// Position in its list's vector, for O(1) removal (a list holds at most every page,
    /// and page ids are `u32`).
    slot: u32,
    /// Open write sessions on blocks of this page: at most one per block, so at most
    /// [`MAX_CHUNKS`].
    pub(crate) writers: u16,
    /// Whether the page is open for writing (under `Protect`: read-write). See `opening.rs`.
    pub(crate) open: bool,
}

impl Page {
    /// A page of `chunks` chunks, all free.
    pub(crate) fn new(addr: usize, write_addr: usize, chunks: usize, bucket: usize) -> Page {
        debug_assert!(chunks <= MAX_CHUNKS);
        Page {
            addr,
            write_addr,
            bucket: list_index(bucket),
            free_chunks: chunks as u16,
            chunks: chunks as u16,
            kept_chunks: 0,
            list: PageList::Bucket,
            slot: 0,
            writers: 0,
            open: false,
        }
    }

    /// The index of its list (see the field).
    #[inline]
    pub(crate) fn bucket(&self) -> usize {
        usize::from(self.bucket)
    }

    /// Position in its list's vector.
    pub(crate) fn slot(&self) -> usize {
        self.slot as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.free_chunks == self.chunks
    }

    pub(crate) fn is_full(&self) -> bool {
        self.free_chunks == 0
    }

    /// Chunks of live blocks.
    pub(crate) fn live_chunks(&self) -> usize {
        usize::from(self.chunks - self.free_chunks - self.kept_chunks)
    }
}

// The page table holds an entry per page of small blocks, looked up on every free: two to a
// cache line, none straddling two (W3's 10,000 live blocks sit on some 2,000 pages).
const _: () = assert!(core::mem::size_of::<Option<Page>>() == 32);

/// A list index as a page keeps it: there are at most `MAX_CHUNKS + 1` lists.
#[inline]
fn list_index(bucket: usize) -> u16 {
    debug_assert!(bucket <= MAX_CHUNKS);
    bucket as u16
}

/// A page's two chunk bitmaps.
#[derive(Debug)]
pub(crate) struct ChunkBits<S> {
    /// Set: the chunk is free.
    pub(crate) free: Bits<S>,
    /// Set: a live block starts at the chunk.
    pub(crate) starts: Bits<S>,
}

impl ChunkBits<&[u64]> {
    /// The nearest block start at or before `chunk`, if `chunk` is taken: the start of the
    /// live block holding it, or, for a chunk of a kept freed block (taken, no start), of
    /// an earlier block that the caller must find too short to hold it.
    pub(crate) fn block_start(&self, chunk: usize) -> Option<usize> {
        if self.free.get(chunk) {
            return None;
        }
        (0..=chunk).rev().find(|&i| self.starts.get(i))
    }
}

/// Bitmaps over list indices: up to one list per free-run length of a 64 KiB page.
pub(crate) type ListSet = Bitmap<9>;

/// The page table and the lists pages sit on: vectors with O(1) removal (each page knows
/// its position).
///
/// Lists of pages with free chunks are indexed by a page's `bucket`: its size bucket under
/// power-of-two classes, the length of its longest free run under chunk classes (so that
/// the first non-empty list at or above a request's length holds its best fits).
#[derive(Debug)]
pub(crate) struct Pages {
    table: Vec<Option<Page>>,
    /// Chunks per page: every page of a heap has the same size.
    chunks: usize,
    /// Words of one chunk bitmap.
    words: usize,
    /// The chunk bitmaps of page `id`, `free` then `starts`, at `2 * words * id`: sized to
    /// the page (one word each for 4 KiB pages), where a bitmap held in each page would be
    /// sized for the largest page the heap supports.
    chunk_bits: Vec<u64>,
    /// The record place of each block on page `id`, at `chunks * id` plus its first chunk;
    /// meaningful only where the page's `starts` bit is set. What finds a small block's
    /// record by address, with no per-block entry to add and remove in a hash map.
    chunk_places: Vec<u32>,
    unused_ids: Vec<PageId>,
    /// Pages with free chunks, per bucket.
    pub(crate) buckets: Vec<Vec<PageId>>,
    /// Pages with free chunks but (last seen) no room for unwind entries, per bucket.
    pub(crate) no_unwind_room: Vec<Vec<PageId>>,
    pub(crate) spare: Vec<PageId>,
    pub(crate) parked: Vec<PageId>,
    /// Which `buckets` lists, and which `no_unwind_room` lists, have pages.
    nonempty: ListSet,
    nonempty_no_room: ListSet,
}

impl Pages {
    pub(crate) fn new(buckets: usize, chunks: usize) -> Pages {
        Pages {
            chunks,
            words: words_for(chunks),
            chunk_bits: Vec::new(),
            chunk_places: Vec::new(),
            buckets: vec![Vec::new(); buckets],
            no_unwind_room: vec![Vec::new(); buckets],
            nonempty: ListSet::new(buckets),
            nonempty_no_room: ListSet::new(buckets),
            table: Vec::new(),
            unused_ids: Vec::new(),
            spare: Vec::new(),
            parked: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: PageId) -> &Page {
        self.table[id as usize]
            .as_ref()
            .expect("page ids in use are live")
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: PageId) -> &mut Page {
        self.table[id as usize]
            .as_mut()
            .expect("page ids in use are live")
    }

    /// The chunk bitmaps of page `id`.
    #[inline]
    pub(crate) fn chunk_bits(&self, id: PageId) -> ChunkBits<&[u64]> {
        let at = 2 * self.words * id as usize;
        let (free, starts) = self.chunk_bits[at..at + 2 * self.words].split_at(self.words);
        ChunkBits {
            free: Bits::view(free, self.chunks),
            starts: Bits::view(starts, self.chunks),
        }
    }

    /// The chunk bitmaps of page `id`, to change.
    #[inline]
    pub(crate) fn chunk_bits_mut(&mut self, id: PageId) -> ChunkBits<&mut [u64]> {
        let at = 2 * self.words * id as usize;
        let words = &mut self.chunk_bits[at..at + 2 * self.words];
        let (free, starts) = words.split_at_mut(self.words);
        ChunkBits {
            free: Bits::view_mut(free, self.chunks),
            starts: Bits::view_mut(starts, self.chunks),
        }
    }

    /// Marks `n` chunks from `first` of page `id` allocated, the first of them a block's
    /// start.
    #[inline]
    pub(crate) fn take(&mut self, id: PageId, first: usize, n: usize) {
        let mut bits = self.chunk_bits_mut(id);
        bits.free.clear_range(first, n);
        bits.starts.set_range(first, 1);
        self.get_mut(id).free_chunks -= n as u16;
    }

    /// Keeps the freed block of `n` chunks at chunk `first` of page `id` for reuse: its
    /// chunks stay taken, its start is cleared (no address finds it).
    #[inline]
    pub(crate) fn keep(&mut self, id: PageId, first: usize, n: usize) {
        *self.starts_word(id, first) &= !(1 << (first % 64));
        self.get_mut(id).kept_chunks += n as u16;
    }

    /// Takes back a kept block of `n` chunks at chunk `first` of page `id` for a new block.
    #[inline]
    pub(crate) fn reuse(&mut self, id: PageId, first: usize, n: usize) {
        *self.starts_word(id, first) |= 1 << (first % 64);
        self.get_mut(id).kept_chunks -= n as u16;
    }

    /// The word of page `id`'s `starts` bitmap that holds chunk `chunk`'s bit: one bit
    /// flipped on the paths that keep and reuse blocks, without making both bitmaps' views.
    #[inline]
    fn starts_word(&mut self, id: PageId, chunk: usize) -> &mut u64 {
        debug_assert!(chunk < self.chunks);
        &mut self.chunk_bits[2 * self.words * id as usize + self.words + chunk / 64]
    }

    /// Stops counting a kept block of `n` chunks on page `id` as kept, before its chunks
    /// are given back.
    pub(crate) fn unkeep(&mut self, id: PageId, n: usize) {
        self.get_mut(id).kept_chunks -= n as u16;
    }

    /// Records where the record of the block starting at chunk `first` of page `id` is.
    #[inline]
    pub(crate) fn set_place(&mut self, id: PageId, first: usize, place: Place) {
        self.chunk_places[self.chunks * id as usize + first] = place.0;
    }

    /// The record place of the live block starting at chunk `chunk` of page `id`, if one
    /// starts there.
    #[inline]
    pub(crate) fn place_at(&self, id: PageId, chunk: usize) -> Option<Place> {
        (self.chunk_bits(id).starts.get(chunk))
            .then(|| Place(self.chunk_places[self.chunks * id as usize + chunk]))
    }

    /// Bytes per page.
    pub(crate) fn page_bytes(&self) -> usize {
        self.chunks * CHUNK
    }

    /// Marks the block of `n` chunks at `first` of page `id` free.
    #[inline]
    pub(crate) fn give_back(&mut self, id: PageId, first: usize, n: usize) {
        let mut bits = self.chunk_bits_mut(id);
        bits.free.set_range(first, n);
        bits.starts.clear_range(first, 1);
        self.get_mut(id).free_chunks += n as u16;
    }

    pub(crate) fn live(&self) -> impl Iterator<Item = (PageId, &Page)> {
        self.table
            .iter()
            .enumerate()
            .filter_map(|(id, page)| Some((id as PageId, page.as_ref()?)))
    }

    /// The page table's length, and its chunk bitmaps' and chunk places', if those two are
    /// not the size the table calls for (for the invariant check).
    pub(crate) fn missized_books(&self) -> Option<[usize; 3]> {
        let entries = self.table.len();
        let sized = self.chunk_bits.len() == entries * 2 * self.words
            && self.chunk_places.len() == entries * self.chunks;
        (!sized).then_some([entries, self.chunk_bits.len(), self.chunk_places.len()])
    }

    /// The vector of a list; full pages have none.
    #[inline]
    fn list_mut(&mut self, list: PageList, bucket: usize) -> Option<&mut Vec<PageId>> {
        match list {
            PageList::Bucket => Some(&mut self.buckets[bucket]),
            PageList::NoUnwindRoom => Some(&mut self.no_unwind_room[bucket]),
            PageList::Full => None,
            PageList::Spare => Some(&mut self.spare),
            PageList::Parked => Some(&mut self.parked),
        }
    }

    /// Adds a page, all of its chunks free, to the table and to `page.list`.
    pub(crate) fn insert(&mut self, page: Page) -> PageId {
        debug_assert!(page.is_empty() && usize::from(page.chunks) == self.chunks);
        let id = match self.unused_ids.pop() {
            Some(id) => id,
            None => {
                self.table.push(None);
                let words = self.chunk_bits.len() + 2 * self.words;
                self.chunk_bits.resize(words, 0);
                let places = self.chunk_places.len() + self.chunks;
                self.chunk_places.resize(places, 0);
                (self.table.len() - 1) as PageId
            }
        };
        let (chunks, mut bits) = (self.chunks, self.chunk_bits_mut(id));
        bits.free.set_range(0, chunks);
        bits.starts.clear_range(0, chunks);
        let (list, bucket) = (page.list, page.bucket());
        self.table[id as usize] = Some(page);
        self.push(id, list, bucket);
        id
    }

    #[inline]
    fn push(&mut self, id: PageId, list: PageList, bucket: usize) {
        let slot = match self.list_mut(list, bucket) {
            Some(vec) => {
                vec.push(id);
                vec.len() - 1
            }
            None => 0,
        };
        if slot == 0 {
            self.mark(list, bucket, true);
        }
        let page = self.get_mut(id);
        page.list = list;
        page.bucket = list_index(bucket);
        page.slot = slot as u32;
    }

    #[inline]
    fn unlink(&mut self, id: PageId) {
        let (list, bucket, slot) = {
            let page = self.get(id);
            (page.list, page.bucket(), page.slot())
        };
        let Some(vec) = self.list_mut(list, bucket) else {
            return;
        };
        vec.swap_remove(slot);
        let emptied = vec.is_empty();
        if let Some(&moved) = vec.get(slot) {
            self.get_mut(moved).slot = slot as u32;
        }
        if emptied {
            self.mark(list, bucket, false);
        }
    }

    /// Records whether list `bucket` of kind `list` has pages.
    #[inline]
    fn mark(&mut self, list: PageList, bucket: usize, nonempty: bool) {
        let set = match list {
            PageList::Bucket => &mut self.nonempty,
            PageList::NoUnwindRoom => &mut self.nonempty_no_room,
            _ => return,
        };
        if nonempty {
            set.set_range(bucket, 1);
        } else {
            set.clear_range(bucket, 1);
        }
    }

    /// The newest page of the first non-empty list at or above index `from`: a bucket list,
    /// or a no-room list too if `no_room_too` (a bucket list wins a tie).
    pub(crate) fn first_listed_from(&self, from: usize, no_room_too: bool) -> Option<PageId> {
        let with_room = self.nonempty.next_set(from);
        let without = no_room_too
            .then(|| self.nonempty_no_room.next_set(from))
            .flatten();
        let list = match (with_room, without) {
            (Some(a), Some(b)) if b < a => &self.no_unwind_room[b],
            (Some(a), _) => &self.buckets[a],
            (None, Some(b)) => &self.no_unwind_room[b],
            (None, None) => return None,
        };
        list.last().copied()
    }

    /// A list whose recorded emptiness is wrong, if any (for the invariant check).
    pub(crate) fn misrecorded_list(&self) -> Option<(PageList, usize)> {
        let kinds = [
            (PageList::Bucket, &self.buckets, &self.nonempty),
            (
                PageList::NoUnwindRoom,
                &self.no_unwind_room,
                &self.nonempty_no_room,
            ),
        ];
        kinds.into_iter().find_map(|(kind, lists, set)| {
            (0..lists.len())
                .find(|&i| set.get(i) == lists[i].is_empty())
                .map(|i| (kind, i))
        })
    }

    /// Moves a page to another list (and bucket).
    #[inline]
    pub(crate) fn relist(&mut self, id: PageId, list: PageList, bucket: usize) {
        let page = self.get(id);
        if page.list == list && page.bucket() == bucket {
            return;
        }
        self.unlink(id);
        if list == PageList::Full {
            // On no list: keeps its bucket, no vector or list bitmap changes.
            let page = self.get_mut(id);
            page.list = list;
            page.bucket = list_index(bucket);
            page.slot = 0;
            return;
        }
        self.push(id, list, bucket);
    }

    /// Removes a page from its list and the table.
    pub(crate) fn remove(&mut self, id: PageId) -> Page {
        self.unlink(id);
        self.unused_ids.push(id);
        self.table[id as usize]
            .take()
            .expect("removed pages are live")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Books for pages of 32 chunks with lists `0..=32` (chunk classes' longest free runs),
    /// and a page on each of `lists`: its kind and index.
    fn pages_on(lists: &[(PageList, usize)]) -> (Pages, Vec<PageId>) {
        let mut pages = Pages::new(33, 32);
        let ids = (lists.iter().enumerate())
            .map(|(i, &(list, index))| {
                let addr = 0x10_0000 + i * 0x1000;
                let id = pages.insert(Page::new(addr, addr, 32, index));
                pages.relist(id, list, index);
                id
            })
            .collect();
        (pages, ids)
    }

    #[test]
    fn the_lowest_listed_index_wins_and_a_bucket_list_a_tie() {
        use PageList::{Bucket, NoUnwindRoom};
        let (pages, ids) = pages_on(&[(Bucket, 5), (NoUnwindRoom, 3)]);
        assert_eq!(pages.first_listed_from(2, true), Some(ids[1]), "3 before 5");
        assert_eq!(
            pages.first_listed_from(2, false),
            Some(ids[0]),
            "no-room lists left out"
        );
        assert_eq!(pages.first_listed_from(4, true), Some(ids[0]));
        let (pages, ids) = pages_on(&[(NoUnwindRoom, 2), (Bucket, 4)]);
        assert_eq!(pages.first_listed_from(1, true), Some(ids[0]), "2 before 4");
        let (pages, ids) = pages_on(&[(NoUnwindRoom, 4), (Bucket, 4)]);
        assert_eq!(pages.first_listed_from(4, true), Some(ids[1]), "the tie");
        assert_eq!(pages.first_listed_from(5, true), None);
    }

    #[test]
    fn a_list_recorded_as_empty_or_not_wrongly_is_named() {
        let (mut pages, _) = pages_on(&[(PageList::Bucket, 2)]);
        assert_eq!(pages.misrecorded_list(), None);
        pages.mark(PageList::Bucket, 2, false);
        assert_eq!(pages.misrecorded_list(), Some((PageList::Bucket, 2)));
        pages.mark(PageList::Bucket, 2, true);
        pages.mark(PageList::NoUnwindRoom, 7, true);
        assert_eq!(pages.misrecorded_list(), Some((PageList::NoUnwindRoom, 7)));
    }
}
