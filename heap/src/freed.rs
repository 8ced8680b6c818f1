//! Freed small blocks kept for the next allocation of their size.
//!
//! A free gives a block's chunks back to its page and files the page again; the next
//! allocation finds a page and takes chunks from it again. When an engine frees and
//! allocates in turn (a compiler thread replacing functions, code aging out as new code
//! comes in) that is the same bookkeeping twice over the same chunks: about a quarter of
//! the instructions of a small alloc + free pair. So a freed block of up to
//! [`MAX_KEPT_CHUNKS`] chunks is kept here instead, scrubbed like any freed block and still
//! taken on its page (its start bit cleared, so no address finds it), and the next
//! allocation of exactly its chunk count takes it back as it is: no page to choose, no
//! bitmap search, no list moves.
//!
//! What it may hold is small and fixed: per chunk count, up to [`MAX_KEPT_CHUNKS`] chunks'
//! worth of blocks (16 blocks of one chunk, one of 16), 2 KiB per size: 10 KiB under
//! power-of-two classes, 32 KiB under whole-chunk classes. It never keeps a page alive: a
//! free that would leave a page with no live block first gives back every block kept from
//! that page, so the page goes back as it would have.

use crate::page::PageId;

/// The largest block kept, in chunks; also the chunks kept per size.
pub(crate) const MAX_KEPT_CHUNKS: usize = 16;

/// `MAX_KEPT_CHUNKS / n` for blocks of `n` chunks at index `n - 1`, so that keeping a block
/// costs no division.
const LIMITS: [usize; MAX_KEPT_CHUNKS] = {
    let mut limits = [0; MAX_KEPT_CHUNKS];
    let mut n = 1;
    while n <= MAX_KEPT_CHUNKS {
        limits[n - 1] = MAX_KEPT_CHUNKS / n;
        n += 1;
    }
    limits
};

/// A kept block: its page and first chunk.
pub(crate) type Kept = (PageId, usize);

#[derive(Debug)]
pub(crate) struct FreedBlocks {
    /// Blocks of `n` chunks at index `n - 1`, the newest last.
    by_chunks: [Vec<(PageId, u16)>; MAX_KEPT_CHUNKS],
    /// Whether blocks are kept at all.
    enabled: bool,
}

impl FreedBlocks {
    /// An empty cache; one that keeps nothing unless `enabled`.
    pub(crate) fn new(enabled: bool) -> FreedBlocks {
        FreedBlocks {
            by_chunks: Default::default(),
            enabled,
        }
    }

    /// Blocks of `chunks` chunks kept at most.
    #[inline]
    pub(crate) fn limit(chunks: usize) -> usize {
        LIMITS[chunks - 1]
    }

    /// Keeps a freed block of `chunks` chunks at chunk `first` of page `page`, if blocks of
    /// its size are kept and there is room for one more; `false` if not.
    #[inline]
    pub(crate) fn keep(&mut self, page: PageId, first: usize, chunks: usize) -> bool {
        if !self.enabled || chunks > MAX_KEPT_CHUNKS {
            return false;
        }
        let list = &mut self.by_chunks[chunks - 1];
        if list.len() == Self::limit(chunks) {
            return false;
        }
        list.push((page, first as u16));
        true
    }

    /// The newest block kept of exactly `chunks` chunks, no longer kept.
    #[inline]
    pub(crate) fn take(&mut self, chunks: usize) -> Option<Kept> {
        let (page, first) = self.by_chunks.get_mut(chunks.checked_sub(1)?)?.pop()?;
        Some((page, usize::from(first)))
    }

    /// Stops keeping the blocks of page `page`, and returns them as (first chunk, chunks).
    pub(crate) fn take_page(&mut self, page: PageId) -> Vec<(usize, usize)> {
        let mut taken = Vec::new();
        for (i, list) in self.by_chunks.iter_mut().enumerate() {
            list.retain(|&(id, first)| {
                let other = id != page;
                if !other {
                    taken.push((usize::from(first), i + 1));
                }
                other
            });
        }
        taken
    }

    /// Stops keeping every block, and returns them as (page, first chunk, chunks).
    pub(crate) fn take_all(&mut self) -> Vec<(PageId, usize, usize)> {
        let taken = self.iter().collect();
        self.by_chunks.iter_mut().for_each(Vec::clear);
        taken
    }

    /// Every kept block as (page, first chunk, chunks).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (PageId, usize, usize)> + '_ {
        (self.by_chunks.iter().enumerate()).flat_map(|(i, list)| {
            list.iter()
                .map(move |&(id, first)| (id, usize::from(first), i + 1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_its_limit_per_size_and_hands_back_the_newest() {
        let mut freed = FreedBlocks::new(true);
        for first in 0..16 {
            assert!(freed.keep(1, first, 1));
        }
        assert!(!freed.keep(2, 0, 1), "16 blocks of one chunk at most");
        assert!(freed.keep(2, 0, 16), "another size has room of its own");
        assert!(!freed.keep(2, 16, 16), "one block of 16 chunks at most");
        assert!(
            !freed.keep(2, 0, MAX_KEPT_CHUNKS + 1),
            "larger blocks are not kept"
        );
        assert_eq!(freed.take(1), Some((1, 15)));
        assert_eq!(freed.take(16), Some((2, 0)));
        assert_eq!(freed.take(16), None);
        assert_eq!(freed.take(0), None);
        assert_eq!(freed.take(MAX_KEPT_CHUNKS + 1), None);
        assert_eq!(freed.iter().count(), 15);
    }

    #[test]
    fn a_page_or_everything_can_be_taken_back() {
        let mut freed = FreedBlocks::new(true);
        assert!(freed.keep(1, 3, 1));
        assert!(freed.keep(2, 4, 2));
        assert!(freed.keep(1, 8, 4));
        assert!(freed.keep(3, 0, 4));
        let mut of_page_1 = freed.take_page(1);
        of_page_1.sort();
        assert_eq!(of_page_1, vec![(3, 1), (8, 4)]);
        assert_eq!(freed.take(4), Some((3, 0)), "other pages' blocks stay");
        let mut rest = freed.take_all();
        rest.sort();
        assert_eq!(rest, vec![(2, 4, 2)]);
        assert_eq!(freed.iter().count(), 0);
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let mut freed = FreedBlocks::new(false);
        assert!(!freed.keep(1, 0, 1));
        assert_eq!(freed.take(1), None);
    }
}
