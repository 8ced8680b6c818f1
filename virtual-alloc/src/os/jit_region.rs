//! The one MAP_JIT region of a process, and the ranges carved from it.
//!
//! Under the hardened runtime a process with the allow-jit entitlement may create only one
//! MAP_JIT region (Apple's porting guide), so reserving a MAP_JIT mapping per segment, as
//! every other strategy maps one per segment, fails at the second segment. The region is
//! mapped once, at the first request, and every MAP_JIT reservation after that is a range
//! of it, handed out first fit at the alignment asked for. A released range goes back to
//! the free ranges (its memory given back by the caller, the mapping kept) and merges with
//! its free neighbours. JavaScriptCore's fixed executable pool and V8's code range on Apple
//! Silicon work the same way.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The process's MAP_JIT region once mapped: where it lies and which ranges of it are free.
#[derive(Debug, Default)]
pub struct JitRegion {
    /// Base and size, once mapped.
    mapped: Option<(usize, usize)>,
    /// Free ranges, start to length; adjacent ranges are always merged.
    free: BTreeMap<usize, usize>,
}

impl JitRegion {
    /// A region not yet mapped.
    pub const fn new() -> JitRegion {
        JitRegion {
            mapped: None,
            free: BTreeMap::new(),
        }
    }

    /// A region mapped already at `base`, `size` bytes, all of it free: how a
    /// [code range](crate::VirtualAlloc::with_code_range), reserved up front, hands out its
    /// regions with the same carving.
    pub fn mapped_at(base: usize, size: usize) -> JitRegion {
        JitRegion {
            mapped: Some((base, size)),
            free: BTreeMap::from([(base, size)]),
        }
    }

    /// Base and size of the region, if it has been mapped.
    pub fn mapped(&self) -> Option<(usize, usize)> {
        self.mapped
    }

    /// The ranges not handed out, as (start, length), lowest first.
    pub fn free_ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.free.iter().map(|(&start, &len)| (start, len))
    }

    /// Bytes of the region not handed out.
    pub fn free_bytes(&self) -> usize {
        self.free.values().sum()
    }

    /// A range of `len` bytes at a multiple of `align` (a power of two), the lowest that
    /// fits. The first call maps the region with `map_region(size)`, `size` bytes; an error
    /// from it is returned as is and leaves the region unmapped, for a later call to retry.
    /// `MapJitRegionFull` if no free range fits.
    pub fn carve(
        &mut self,
        len: usize,
        align: usize,
        size: usize,
        map_region: impl FnOnce(usize) -> Result<usize>,
    ) -> Result<usize> {
        debug_assert!(align.is_power_of_two());
        if self.mapped.is_none() {
            let base = map_region(size)?;
            self.mapped = Some((base, size));
            self.free.insert(base, size);
        }
        let full = || Error::MapJitRegionFull {
            requested: len,
            region: self.mapped.map_or(0, |(_, size)| size),
        };
        let fit = self.free.iter().find_map(|(&start, &free)| {
            let at = start.checked_next_multiple_of(align)?;
            let end = at.checked_add(len)?;
            (end <= start + free).then_some((start, free, at))
        });
        let Some((start, free, at)) = fit else {
            return Err(full());
        };
        self.free.remove(&start);
        if at > start {
            self.free.insert(start, at - start);
        }
        if at + len < start + free {
            self.free.insert(at + len, start + free - (at + len));
        }
        Ok(at)
    }

    /// Whether `addr..addr + len` is a non-empty range of the region that no free range
    /// overlaps: one `give_back` would take.
    pub fn is_handed_out(&self, addr: usize, len: usize) -> bool {
        let Some((base, size)) = self.mapped else {
            return false;
        };
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let overlaps_free =
            (self.free.range(..end).next_back()).is_some_and(|(&start, &free)| start + free > addr);
        len > 0 && addr >= base && end <= base + size && !overlaps_free
    }

    /// Takes back a range `carve` handed out. `false`, changing nothing, if it is not
    /// [handed out](Self::is_handed_out) (not inside the region, or given back already).
    pub fn give_back(&mut self, addr: usize, len: usize) -> bool {
        if !self.is_handed_out(addr, len) {
            return false;
        }
        let (mut start, mut free, end) = (addr, len, addr + len);
        let before = self.free.range(..addr).next_back().map(|(&s, &l)| (s, l));
        if let Some((prev, prev_len)) = before.filter(|&(s, l)| s + l == addr) {
            self.free.remove(&prev);
            start = prev;
            free += prev_len;
        }
        if let Some(next_len) = self.free.remove(&end) {
            free += next_len;
        }
        self.free.insert(start, free);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn region_at(base: usize, size: usize) -> JitRegion {
        let region = JitRegion::mapped_at(base, size);
        assert_eq!(region.mapped(), Some((base, size)));
        assert_eq!(region.free_ranges().collect::<Vec<_>>(), [(base, size)]);
        region
    }

    #[test]
    fn the_region_is_mapped_once() {
        let mut region = JitRegion::new();
        let mut maps = 0;
        for _ in 0..3 {
            region
                .carve(64 * KIB, 64 * KIB, 1024 * KIB, |size| {
                    maps += 1;
                    assert_eq!(size, 1024 * KIB);
                    Ok(0x10_0000)
                })
                .unwrap();
        }
        assert_eq!(maps, 1);
        assert_eq!(region.free_bytes(), 1024 * KIB - 3 * 64 * KIB);
    }

    #[test]
    fn a_refused_map_leaves_the_region_unmapped() {
        let mut region = JitRegion::new();
        let refused = region.carve(KIB, KIB, 64 * KIB, |_| {
            Err(Error::MapJitRefused { errno: 1 })
        });
        assert_eq!(refused, Err(Error::MapJitRefused { errno: 1 }));
        assert_eq!(region.mapped(), None);
        assert_eq!(region.carve(KIB, KIB, 64 * KIB, |_| Ok(0x4000)), Ok(0x4000));
    }

    #[test]
    fn ranges_are_aligned_and_the_head_stays_free() {
        // A region at a 16 KiB boundary that is not a 64 KiB one.
        let mut region = region_at(0x10_4000, 1024 * KIB);
        let at = region
            .carve(64 * KIB, 64 * KIB, 0, |_| unreachable!())
            .unwrap();
        assert_eq!(at, 0x11_0000);
        // The 48 KiB before it is still there for smaller alignments.
        assert_eq!(
            region.carve(16 * KIB, 16 * KIB, 0, |_| unreachable!()),
            Ok(0x10_4000)
        );
    }

    #[test]
    fn given_back_ranges_merge_and_are_reused() {
        let mut region = region_at(0x10_0000, 256 * KIB);
        let carve =
            |region: &mut JitRegion| region.carve(64 * KIB, 64 * KIB, 0, |_| unreachable!());
        let ranges: Vec<usize> = (0..4).map(|_| carve(&mut region).unwrap()).collect();
        assert_eq!(
            carve(&mut region),
            Err(Error::MapJitRegionFull {
                requested: 64 * KIB,
                region: 256 * KIB
            })
        );
        assert!(region.give_back(ranges[1], 64 * KIB));
        assert!(region.give_back(ranges[2], 64 * KIB));
        // The two merged: one 128 KiB range fits where neither half would.
        assert_eq!(
            region.carve(128 * KIB, 64 * KIB, 0, |_| unreachable!()),
            Ok(ranges[1])
        );
        assert_eq!(region.free_bytes(), 0);
    }

    #[test]
    fn only_ranges_handed_out_can_be_given_back() {
        let mut region = region_at(0x10_0000, 256 * KIB);
        let at = region
            .carve(64 * KIB, 64 * KIB, 0, |_| unreachable!())
            .unwrap();
        assert!(!region.give_back(at + 64 * KIB, 64 * KIB), "a free range");
        assert!(!region.give_back(0x1000, 64 * KIB), "outside the region");
        assert!(!region.give_back(at, 0), "empty");
        assert!(!region.give_back(at, 128 * KIB), "runs into a free range");
        assert!(region.give_back(at, 64 * KIB));
        assert!(!region.give_back(at, 64 * KIB), "given back twice");
        assert_eq!(region.free_bytes(), 256 * KIB);
    }

    proptest::proptest! {
        #![proptest_config(codeheap_test_support::proptest_config(256, 4))]

        /// Against a model of which 16 KiB granules are handed out: ranges never overlap,
        /// stay inside the region at their alignment, and every byte is either handed out
        /// or free, in merged free ranges.
        #[test]
        fn carving_matches_a_granule_model(
            ops in proptest::collection::vec((proptest::bool::ANY, 1usize..12, 0usize..3, 0usize..64), 1..60)
        ) {
            const GRANULE: usize = 16 * KIB;
            const BASE: usize = 0x10_4000;
            const SIZE: usize = 64 * GRANULE;
            let mut region = JitRegion::new();
            let mut taken = [false; 64];
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (carve, granules, align_log, pick) in ops {
                if carve || live.is_empty() {
                    let (len, align) = (granules * GRANULE, GRANULE << (2 * align_log));
                    match region.carve(len, align, SIZE, |_| Ok(BASE)) {
                        Ok(at) => {
                            proptest::prop_assert!(at.is_multiple_of(align));
                            proptest::prop_assert!(at >= BASE && at + len <= BASE + SIZE);
                            let first = (at - BASE) / GRANULE;
                            for g in &mut taken[first..first + granules] {
                                proptest::prop_assert!(!*g, "{at:#x} overlaps a live range");
                                *g = true;
                            }
                            live.push((at, len));
                        }
                        Err(err) => {
                            proptest::prop_assert_eq!(err, Error::MapJitRegionFull { requested: len, region: SIZE });
                            // No aligned window of free granules was long enough.
                            let fits = (0..64).any(|g| {
                                (BASE + g * GRANULE).is_multiple_of(align)
                                    && g + granules <= 64
                                    && taken[g..g + granules].iter().all(|t| !t)
                            });
                            proptest::prop_assert!(!fits, "refused {len:#x} at {align:#x} with room");
                        }
                    }
                } else {
                    let (at, len) = live.swap_remove(pick % live.len());
                    proptest::prop_assert!(region.give_back(at, len));
                    let first = (at - BASE) / GRANULE;
                    taken[first..first + len / GRANULE].fill(false);
                }
                let free = taken.iter().filter(|t| !**t).count() * GRANULE;
                proptest::prop_assert_eq!(region.free_bytes(), free);
                // The free ranges are the model's runs of free granules: merged, none empty.
                let mut runs: Vec<(usize, usize)> = Vec::new();
                for g in (0..64).filter(|&g| !taken[g]) {
                    let at = BASE + g * GRANULE;
                    match runs.last_mut() {
                        Some((start, len)) if *start + *len == at => *len += GRANULE,
                        _ => runs.push((at, GRANULE)),
                    }
                }
                let ranges: Vec<(usize, usize)> = region.free_ranges().collect();
                proptest::prop_assert_eq!(ranges, runs);
            }
        }
    }
}
