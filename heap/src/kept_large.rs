//! Freed large blocks kept for the next allocation of the same number of pages.
//!
//! A large block's allocation and its free are each a trip through the page allocator: its
//! lock, its books of free runs, a protection query. Beside the trap fill that was most of
//! what a 16 KiB block's alloc + free pair cost: 5,000 instructions outside the fill, 1,800
//! with the block kept (callgrind, W1 at 16 KiB). So a freed large block is kept here
//! instead, scrubbed like any freed block, execute-read and still held from the page
//! allocator, found by no address, and the next allocation of exactly its page count takes
//! it back as it is (one with an unwind entry only if the block's segment has a slot for
//! the entry: `Heap::kept_large_for`).
//!
//! What it holds is small and fixed: [`MAX_KEPT_LARGE_PAGES`] pages in all (64 KiB of
//! 4 KiB pages, as many as the heap's spare pages). A block that would go over makes room
//! by giving back the blocks kept longest; one larger than the whole budget is not kept.
//! `trim` and `decommit_all` give them all back.

use std::collections::VecDeque;

/// Pages kept in all, at most.
pub(crate) const MAX_KEPT_LARGE_PAGES: usize = 16;

/// A kept large block: where it runs, where it is written, its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeptLarge {
    pub(crate) addr: usize,
    pub(crate) write_addr: usize,
    pub(crate) pages: usize,
}

#[derive(Debug)]
pub(crate) struct KeptLargeBlocks {
    /// The oldest first.
    blocks: VecDeque<KeptLarge>,
    /// Their pages.
    pages: usize,
    /// Whether blocks are kept at all.
    enabled: bool,
}

impl KeptLargeBlocks {
    /// An empty cache; one that keeps nothing unless `enabled`.
    pub(crate) fn new(enabled: bool) -> KeptLargeBlocks {
        KeptLargeBlocks {
            blocks: VecDeque::new(),
            pages: 0,
            enabled,
        }
    }

    /// Whether a freed block of `pages` pages may be kept (once there is room for it). Not
    /// one of a single page: no allocation asks for one (a page-sized request is small), so
    /// a large block `shrink` left with one page is given back when freed.
    #[inline]
    pub(crate) fn takes(&self, pages: usize) -> bool {
        self.enabled && (2..=MAX_KEPT_LARGE_PAGES).contains(&pages)
    }

    /// Whether a block of `pages` pages fits beside those kept (else the oldest go first).
    #[inline]
    pub(crate) fn has_room_for(&self, pages: usize) -> bool {
        self.pages + pages <= MAX_KEPT_LARGE_PAGES
    }

    /// Stops keeping the oldest block (given back by the caller).
    pub(crate) fn drop_oldest(&mut self) {
        if let Some(oldest) = self.blocks.pop_front() {
            self.pages -= oldest.pages;
        }
    }

    /// Keeps a freed block, which [`takes`](Self::takes) accepted and
    /// [`has_room_for`](Self::has_room_for).
    #[inline]
    pub(crate) fn keep(&mut self, block: KeptLarge) {
        debug_assert!(self.takes(block.pages) && self.has_room_for(block.pages));
        self.pages += block.pages;
        self.blocks.push_back(block);
    }

    /// The newest block kept of exactly `pages` pages, no longer kept.
    #[inline]
    pub(crate) fn take(&mut self, pages: usize) -> Option<KeptLarge> {
        let at = self.blocks.iter().rposition(|block| block.pages == pages)?;
        let block = self.blocks.remove(at)?;
        self.pages -= block.pages;
        Some(block)
    }

    /// The oldest block kept, if any (to give back, then [`drop_oldest`](Self::drop_oldest)).
    pub(crate) fn oldest(&self) -> Option<KeptLarge> {
        self.blocks.front().copied()
    }

    /// Every kept block, the oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &KeptLarge> {
        self.blocks.iter()
    }

    /// Pages kept.
    pub(crate) fn pages(&self) -> usize {
        self.pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(addr: usize, pages: usize) -> KeptLarge {
        KeptLarge {
            addr,
            write_addr: addr + 1,
            pages,
        }
    }

    #[test]
    fn hands_back_the_newest_of_a_page_count_and_makes_room_oldest_first() {
        let mut kept = KeptLargeBlocks::new(true);
        for (addr, pages) in [(1, 4), (2, 2), (3, 4), (4, 6)] {
            assert!(kept.has_room_for(pages));
            kept.keep(block(addr, pages));
        }
        assert_eq!(kept.pages(), 16);
        // Two pages more: no room until the oldest is dropped.
        assert!(!kept.has_room_for(2));
        assert_eq!(kept.oldest(), Some(block(1, 4)));
        kept.drop_oldest();
        assert!(kept.has_room_for(2));
        kept.keep(block(5, 2));
        assert_eq!(kept.take(4), Some(block(3, 4)));
        assert_eq!(
            kept.take(4),
            None,
            "the other block of 4 pages was given back"
        );
        assert_eq!(kept.take(3), None, "only the exact page count");
        assert_eq!(kept.take(2), Some(block(5, 2)), "the newest of two");
        assert_eq!(kept.pages(), 8);
        assert_eq!(kept.oldest(), Some(block(2, 2)));
        let left: Vec<KeptLarge> = kept.iter().copied().collect();
        assert_eq!(left, [block(2, 2), block(4, 6)]);
    }

    #[test]
    fn keeps_nothing_past_its_budget_of_one_page_or_when_disabled() {
        let kept = KeptLargeBlocks::new(true);
        assert!(kept.takes(2));
        assert!(kept.takes(MAX_KEPT_LARGE_PAGES));
        assert!(!kept.takes(MAX_KEPT_LARGE_PAGES + 1));
        assert!(!kept.takes(1));
        let disabled = KeptLargeBlocks::new(false);
        assert!(!disabled.takes(2));
    }
}
