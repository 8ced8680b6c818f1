//! The simulator's page table: an entry per mapped page, in leaves of consecutive pages.
//!
//! An ordered map with an entry per page made every simulated `mmap` and `munmap` a tree
//! insertion or removal per page (a heap's life costs thousands of them), and every access
//! a search of a tree of thousands of keys; under miri that was the floor of each test.
//! Leaves of `LEAF_PAGES` entries keep the map down to a key per leaf (a segment's pages
//! lie in one or two of them), and a lookup in the leaf of the one before needs no search.

use core::cell::Cell;
use std::ops::Range;

use super::state::Pte;

/// Pages per leaf: 256 KiB of 4 KiB pages, 1 MiB of 16 KiB pages, a segment or two.
const LEAF_PAGES: usize = 64;

#[derive(Debug)]
struct Leaf {
    entries: [Option<Pte>; LEAF_PAGES],
    /// Entries that are `Some`: an empty leaf is removed.
    present: usize,
}

#[derive(Debug, Default)]
pub(super) struct PageTable {
    /// Leaves by `vpn / LEAF_PAGES`, in ascending order: a process has a few dozen.
    leaves: Vec<(usize, Box<Leaf>)>,
    /// Where in `leaves` the last lookup found its leaf: accesses go page after page, so
    /// the next one is most often in the same leaf, found without a search.
    last: Cell<usize>,
    /// Pages mapped, in every leaf.
    len: usize,
}

fn split(vpn: usize) -> (usize, usize) {
    (vpn / LEAF_PAGES, vpn % LEAF_PAGES)
}

impl PageTable {
    /// Pages mapped.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Where in `leaves` leaf `key` is, or where it would go.
    fn find(&self, key: usize) -> Result<usize, usize> {
        let last = self.last.get();
        if self.leaves.get(last).is_some_and(|&(k, _)| k == key) {
            return Ok(last);
        }
        let found = self.leaves.binary_search_by_key(&key, |&(k, _)| k);
        if let Ok(at) = found {
            self.last.set(at);
        }
        found
    }

    pub(super) fn get(&self, vpn: usize) -> Option<&Pte> {
        let (key, slot) = split(vpn);
        let at = self.find(key).ok()?;
        self.leaves[at].1.entries[slot].as_ref()
    }

    pub(super) fn get_mut(&mut self, vpn: usize) -> Option<&mut Pte> {
        let (key, slot) = split(vpn);
        let at = self.find(key).ok()?;
        self.leaves[at].1.entries[slot].as_mut()
    }

    pub(super) fn contains(&self, vpn: usize) -> bool {
        self.get(vpn).is_some()
    }

    /// Maps `vpn` to `pte`, returning the entry it replaces.
    pub(super) fn insert(&mut self, vpn: usize, pte: Pte) -> Option<Pte> {
        let (key, slot) = split(vpn);
        let at = self.find(key).unwrap_or_else(|at| {
            let leaf = Leaf {
                entries: [None; LEAF_PAGES],
                present: 0,
            };
            self.leaves.insert(at, (key, Box::new(leaf)));
            at
        });
        let leaf = &mut self.leaves[at].1;
        let old = leaf.entries[slot].replace(pte);
        if old.is_none() {
            leaf.present += 1;
            self.len += 1;
        }
        old
    }

    /// Maps `vpn` to `pte` unless it is mapped already.
    pub(super) fn insert_if_absent(&mut self, vpn: usize, pte: Pte) {
        if !self.contains(vpn) {
            self.insert(vpn, pte);
        }
    }

    pub(super) fn remove(&mut self, vpn: usize) -> Option<Pte> {
        let (key, slot) = split(vpn);
        let at = self.find(key).ok()?;
        let leaf = &mut self.leaves[at].1;
        let old = leaf.entries[slot].take()?;
        leaf.present -= 1;
        self.len -= 1;
        if leaf.present == 0 {
            self.leaves.remove(at);
        }
        Some(old)
    }

    /// Pages mapped among `vpns`.
    pub(super) fn count_in(&self, vpns: Range<usize>) -> usize {
        if vpns.is_empty() {
            return 0;
        }
        let (first_leaf, _) = split(vpns.start);
        let (last_leaf, _) = split(vpns.end - 1);
        let first = self.leaves.partition_point(|&(key, _)| key < first_leaf);
        (self.leaves[first..].iter())
            .take_while(|&&(key, _)| key <= last_leaf)
            .map(|(key, leaf)| {
                let base = key * LEAF_PAGES;
                let from = vpns.start.max(base) - base;
                let to = vpns.end.min(base + LEAF_PAGES) - base;
                leaf.entries[from..to].iter().flatten().count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::protection::Protection;
    use crate::sim::state::Backing;
    use proptest::prelude::*;

    fn pte(tag: usize) -> Pte {
        Pte {
            protection: Protection::ALL[tag % Protection::ALL.len()],
            jit: tag % 2 == 1,
            backing: Backing::Shared { fd: 3, page: tag },
        }
    }

    /// What a page table says about every page near the ones touched.
    fn view(table: &PageTable, vpns: Range<usize>) -> Vec<Option<(Protection, bool, Backing)>> {
        vpns.map(|vpn| table.get(vpn).map(|p| (p.protection, p.jit, p.backing)))
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, usize),
        InsertIfAbsent(usize, usize),
        Remove(usize),
        Protect(usize),
    }

    /// Pages across four leaves and the edges between them.
    const SPAN: usize = 4 * LEAF_PAGES;

    /// A page at either end or the middle of a leaf: few pages per leaf, so that removals
    /// empty leaves often.
    fn vpn() -> impl Strategy<Value = usize> {
        (
            0..SPAN / LEAF_PAGES,
            prop::sample::select(vec![0, 1, LEAF_PAGES / 2, LEAF_PAGES - 1]),
        )
            .prop_map(|(leaf, slot)| leaf * LEAF_PAGES + slot)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (vpn(), 0..1000usize).prop_map(|(v, t)| Op::Insert(v, t)),
            (vpn(), 0..1000usize).prop_map(|(v, t)| Op::InsertIfAbsent(v, t)),
            vpn().prop_map(Op::Remove),
            vpn().prop_map(Op::Protect),
        ]
    }

    proptest! {
        #![proptest_config(codeheap_test_support::proptest_config(128, 1))]

        /// Against an ordered map of pages, the layout it replaces.
        #[test]
        fn matches_a_map_of_pages(
            base_leaf in 0usize..1 << 20,
            ops in proptest::collection::vec(op(), 1..120),
            ranges in proptest::collection::vec((0..SPAN, 0..SPAN), 4),
        ) {
            let base = base_leaf * LEAF_PAGES;
            let mut table = PageTable::default();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(v, t) => {
                        let old = table.insert(base + v, pte(t)).map(|p| p.backing);
                        prop_assert_eq!(old, model.insert(v, pte(t)).map(|p| p.backing));
                    }
                    Op::InsertIfAbsent(v, t) => {
                        table.insert_if_absent(base + v, pte(t));
                        model.entry(v).or_insert(pte(t));
                    }
                    Op::Remove(v) => {
                        let old = table.remove(base + v).map(|p| p.backing);
                        prop_assert_eq!(old, model.remove(&v).map(|p| p.backing));
                    }
                    Op::Protect(v) => {
                        if let Some(p) = table.get_mut(base + v) {
                            p.protection = Protection::NoAccess;
                        }
                        if let Some(p) = model.get_mut(&v) {
                            p.protection = Protection::NoAccess;
                        }
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            let expected: Vec<_> = (0..SPAN)
                .map(|v| model.get(&v).map(|p| (p.protection, p.jit, p.backing)))
                .collect();
            prop_assert_eq!(view(&table, base..base + SPAN), expected);
            for (a, b) in ranges {
                let (from, to) = (a.min(b), a.max(b));
                prop_assert_eq!(
                    table.count_in(base + from..base + to),
                    model.range(from..to).count()
                );
            }
            prop_assert_eq!(table.leaves.len(), model.keys().map(|v| v / LEAF_PAGES).collect::<BTreeSet<_>>().len(), "empty leaves are dropped");
        }
    }
}
