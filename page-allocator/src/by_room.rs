//! Segments with decommitted pages, filed by their longest run of free and decommitted
//! pages: the longest request each can take without a new segment.
//!
//! A request no free run fits commits a window of free and decommitted pages. Only
//! segments whose longest such run holds the request can give it one, and the shortest of
//! those fit it most tightly, leaving longer runs whole for longer requests: the search
//! weighs them in that order, a bounded number of them, and never a segment that cannot
//! fit. A list per length with O(1) removal (each segment knows its slot) keeps the filing
//! off the search trees the rest of the allocator uses: a release or an allocation that
//! changes a segment's longest run moves it with a push and a swap.

use crate::segment::MAX_SEGMENT_PAGES;

/// Where a filed segment is: its longest run and its slot in that length's list.
pub(crate) type Filed = (usize, usize);

#[derive(Debug)]
pub(crate) struct ByRoom {
    /// Segment bases per longest run, `0..=MAX_SEGMENT_PAGES`.
    lists: Vec<Vec<usize>>,
    /// Bit `len` set: the list of that length has segments.
    nonempty: u128,
}

const _: () = assert!(MAX_SEGMENT_PAGES < u128::BITS as usize);

impl Default for ByRoom {
    fn default() -> Self {
        ByRoom {
            lists: vec![Vec::new(); MAX_SEGMENT_PAGES + 1],
            nonempty: 0,
        }
    }
}

impl ByRoom {
    /// Files the segment at `base`, whose longest run is `len` pages; where it now is.
    pub(crate) fn file(&mut self, len: usize, base: usize) -> Filed {
        let list = &mut self.lists[len];
        list.push(base);
        self.nonempty |= 1 << len;
        (len, list.len() - 1)
    }

    /// Takes the segment filed at `at` out; the base of the segment moved into its slot,
    /// if one was (its slot is now `at`'s).
    pub(crate) fn unfile(&mut self, (len, slot): Filed) -> Option<usize> {
        let list = &mut self.lists[len];
        list.swap_remove(slot);
        if list.is_empty() {
            self.nonempty &= !(1 << len);
        }
        list.get(slot).copied()
    }

    /// The segments whose longest run is at least `n` pages, shortest runs first (in the
    /// order they were filed within a length).
    pub(crate) fn at_least(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        let mut rest = self.nonempty.checked_shr(n as u32).unwrap_or(0) << n;
        core::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let len = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(self.lists[len].iter().copied())
        })
        .flatten()
    }

    /// The base filed at `at`, if any (for the invariant check).
    pub(crate) fn at(&self, (len, slot): Filed) -> Option<usize> {
        self.lists.get(len)?.get(slot).copied()
    }

    /// Segments filed.
    pub(crate) fn len(&self) -> usize {
        self.lists.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_come_first_and_a_removal_moves_the_last_of_its_list() {
        let mut filed = ByRoom::default();
        let a = filed.file(3, 0xa000);
        filed.file(3, 0xb000);
        filed.file(1, 0xc000);
        filed.file(MAX_SEGMENT_PAGES, 0xd000);
        let from = |n| filed.at_least(n).collect::<Vec<_>>();
        assert_eq!(from(2), [0xa000, 0xb000, 0xd000]);
        assert_eq!(from(0), [0xc000, 0xa000, 0xb000, 0xd000]);
        assert_eq!(from(MAX_SEGMENT_PAGES), [0xd000]);
        assert_eq!(from(MAX_SEGMENT_PAGES + 1), [0usize; 0]);
        assert_eq!(filed.unfile(a), Some(0xb000), "b moves into a's slot");
        assert_eq!(filed.at(a), Some(0xb000));
        assert_eq!(filed.unfile(a), None, "b, now alone, leaves an empty list");
        assert_eq!(filed.at_least(2).collect::<Vec<_>>(), [0xd000]);
        assert_eq!(filed.len(), 2);
        // An emptied length leaves the set the search walks, or every search from below it
        // would step through the empty list.
        let lengths: Vec<u32> = (0..u128::BITS)
            .filter(|&len| filed.nonempty >> len & 1 == 1)
            .collect();
        assert_eq!(lengths, [1, MAX_SEGMENT_PAGES as u32]);
    }
}
