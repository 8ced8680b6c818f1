//! Segments with decommitted pages, filed by how many free pages they have.
//!
//! A request no free run fits commits a window of free and decommitted pages, the one with
//! the most free pages (the fewest to commit). A window cannot hold more free pages than
//! its segment has, so weighing segments fullest first and stopping at the first whose
//! count does not beat the best window found gives the best window without a walk over
//! every segment. Lists per count with O(1) removal (each segment knows its slot) keep the
//! filing off the search trees the rest of the allocator uses: a free or release moves a
//! segment with a push and a swap.

use crate::segment::MAX_SEGMENT_PAGES;

/// Where a filed segment is: its count of free pages and its slot in that count's list.
pub(crate) type Filed = (usize, usize);

#[derive(Debug)]
pub(crate) struct ByFreePages {
    /// Segment bases per count of free pages, `0..=MAX_SEGMENT_PAGES`.
    lists: Vec<Vec<usize>>,
    /// Bit `count` set: the list of that count has segments.
    nonempty: u128,
}

const _: () = assert!(MAX_SEGMENT_PAGES < u128::BITS as usize);

impl Default for ByFreePages {
    fn default() -> Self {
        ByFreePages {
            lists: vec![Vec::new(); MAX_SEGMENT_PAGES + 1],
            nonempty: 0,
        }
    }
}

impl ByFreePages {
    /// Files the segment at `base`, which has `count` free pages; where it now is.
    pub(crate) fn file(&mut self, count: usize, base: usize) -> Filed {
        let list = &mut self.lists[count];
        list.push(base);
        self.nonempty |= 1 << count;
        (count, list.len() - 1)
    }

    /// Takes the segment filed at `at` out; the base of the segment moved into its slot,
    /// if one was (its slot is now `at`'s).
    pub(crate) fn unfile(&mut self, (count, slot): Filed) -> Option<usize> {
        let list = &mut self.lists[count];
        list.swap_remove(slot);
        if list.is_empty() {
            self.nonempty &= !(1 << count);
        }
        list.get(slot).copied()
    }

    /// Counts that have segments, the highest first, with their segments.
    pub(crate) fn fullest_first(&self) -> impl Iterator<Item = (usize, &[usize])> + '_ {
        let mut rest = self.nonempty;
        core::iter::from_fn(move || {
            let count = (u128::BITS - 1).checked_sub(rest.leading_zeros())? as usize;
            rest &= !(1 << count);
            Some((count, self.lists[count].as_slice()))
        })
    }

    /// The base filed at `at`, if any (for the invariant check).
    pub(crate) fn at(&self, (count, slot): Filed) -> Option<usize> {
        self.lists.get(count)?.get(slot).copied()
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
    fn the_fullest_come_first_and_a_removal_moves_the_last_of_its_list() {
        let mut filed = ByFreePages::default();
        let a = filed.file(3, 0xa000);
        let b = filed.file(3, 0xb000);
        filed.file(0, 0xc000);
        filed.file(MAX_SEGMENT_PAGES, 0xd000);
        let order: Vec<(usize, Vec<usize>)> = (filed.fullest_first())
            .map(|(count, bases)| (count, bases.to_vec()))
            .collect();
        assert_eq!(
            order,
            [
                (MAX_SEGMENT_PAGES, vec![0xd000]),
                (3, vec![0xa000, 0xb000]),
                (0, vec![0xc000])
            ]
        );
        assert_eq!(filed.unfile(a), Some(0xb000), "b moves into a's slot");
        assert_eq!(filed.at(a), Some(0xb000));
        assert_eq!(filed.unfile(a), None, "b, now alone, leaves an empty list");
        assert_eq!(b, (3, 1));
        assert!(filed.fullest_first().all(|(count, _)| count != 3));
        assert_eq!(filed.len(), 2);
    }
}
