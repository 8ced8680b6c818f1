//! The JIT region registry: which address ranges are code regions, and what each one is.
//!
//! ChakraCore's Apple port keeps a fixed table of 256 MAP_JIT regions searched linearly
//! under a mutex. This registry has no fixed capacity, answers in O(log n) from an
//! address-ordered map, and lets any number of threads look up while regions are added and
//! removed (a reader-writer lock: lookups, the hot path, share it).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::sync::{RwLock, read, write};

/// A registered address range: `base..base + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionSpan {
    /// First address of the region.
    pub base: usize,
    /// Its length in bytes (never zero).
    pub size: usize,
}

impl RegionSpan {
    /// One past the last address.
    pub const fn end(&self) -> usize {
        self.base + self.size
    }

    /// Whether `addr` lies in the region.
    pub const fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr < self.end()
    }
}

#[derive(Debug)]
struct Entry<T> {
    size: usize,
    value: T,
}

/// Address ranges with a value each, none overlapping, in an address-ordered map behind a
/// reader-writer lock: any number of lookups at once, while regions are added and removed.
#[derive(Debug)]
pub struct RegionRegistry<T> {
    regions: RwLock<BTreeMap<usize, Entry<T>>>,
}

impl<T> Default for RegionRegistry<T> {
    fn default() -> Self {
        RegionRegistry::new()
    }
}

impl<T> RegionRegistry<T> {
    /// An empty registry.
    pub fn new() -> RegionRegistry<T> {
        RegionRegistry {
            regions: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds `base..base + size` with `value`. Fails on a zero or overflowing size and on an
    /// overlap with a registered region, changing nothing.
    pub fn register(&self, base: usize, size: usize, value: T) -> Result<()> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let end = base.checked_add(size).ok_or(Error::SizeOverflow { size })?;
        let mut regions = write(&self.regions);
        let before = regions.range(..end).next_back();
        if before.is_some_and(|(&start, entry)| start + entry.size > base) {
            return Err(Error::RegionOverlap { base, size });
        }
        regions.insert(base, Entry { size, value });
        Ok(())
    }

    /// Removes the region starting at `base`, returning its value.
    pub fn unregister(&self, base: usize) -> Option<T> {
        write(&self.regions).remove(&base).map(|entry| entry.value)
    }

    /// Removes every region, returning them in address order.
    pub fn drain(&self) -> Vec<(RegionSpan, T)> {
        let regions = core::mem::take(&mut *write(&self.regions));
        regions
            .into_iter()
            .map(|(base, entry)| {
                (
                    RegionSpan {
                        base,
                        size: entry.size,
                    },
                    entry.value,
                )
            })
            .collect()
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        read(&self.regions).len()
    }

    /// Whether no region is registered.
    pub fn is_empty(&self) -> bool {
        read(&self.regions).is_empty()
    }

    /// Whether `addr` lies in a registered region (the seeds' `IsMapJitRegion`).
    pub fn contains(&self, addr: usize) -> bool {
        let regions = read(&self.regions);
        Self::find(&regions, addr).is_some()
    }

    fn find(regions: &BTreeMap<usize, Entry<T>>, addr: usize) -> Option<(RegionSpan, &T)> {
        let (&base, entry) = regions.range(..=addr).next_back()?;
        let span = RegionSpan {
            base,
            size: entry.size,
        };
        span.contains(addr).then_some((span, &entry.value))
    }
}

impl<T: Clone> RegionRegistry<T> {
    /// The region holding `addr`, if any.
    pub fn lookup(&self, addr: usize) -> Option<(RegionSpan, T)> {
        let regions = read(&self.regions);
        Self::find(&regions, addr).map(|(span, value)| (span, value.clone()))
    }

    /// The one region holding all of `addr..addr + size`: `NotInRegion` if `addr` is in
    /// none, `RangeOutsideRegion` if the range runs past its end.
    pub fn lookup_range(&self, addr: usize, size: usize) -> Result<(RegionSpan, T)> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let (span, value) = self.lookup(addr).ok_or(Error::NotInRegion { addr })?;
        match addr.checked_add(size) {
            Some(end) if end <= span.end() => Ok((span, value)),
            _ => Err(Error::RangeOutsideRegion { addr, size }),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_only_inside_addresses() {
        let registry = RegionRegistry::new();
        registry.register(0x1000, 0x1000, 'a').unwrap();
        registry.register(0x3000, 0x2000, 'b').unwrap();
        assert_eq!(registry.lookup(0x0fff), None);
        assert_eq!(registry.lookup(0x1000).map(|r| r.1), Some('a'));
        assert_eq!(registry.lookup(0x1fff).map(|r| r.1), Some('a'));
        assert_eq!(registry.lookup(0x2000), None);
        assert_eq!(registry.lookup(0x4fff).map(|r| r.1), Some('b'));
        assert_eq!(registry.lookup(0x5000), None);
    }

    #[test]
    fn overlaps_are_refused_without_change() {
        let registry = RegionRegistry::new();
        registry.register(0x2000, 0x2000, 1).unwrap();
        for (base, size) in [(0x1000, 0x1001), (0x3fff, 1), (0x1000, 0x4000), (0x2000, 1)] {
            assert_eq!(
                registry.register(base, size, 2),
                Err(Error::RegionOverlap { base, size })
            );
        }
        registry.register(0x1000, 0x1000, 3).unwrap();
        registry.register(0x4000, 0x1000, 4).unwrap();
        assert_eq!(registry.len(), 3);
    }

    #[test]
    fn ranges_must_fit_one_region() {
        let registry = RegionRegistry::new();
        registry.register(0x1000, 0x1000, ()).unwrap();
        registry.register(0x2000, 0x1000, ()).unwrap();
        assert!(registry.lookup_range(0x1000, 0x1000).is_ok());
        assert_eq!(
            registry.lookup_range(0x1800, 0x1000),
            Err(Error::RangeOutsideRegion {
                addr: 0x1800,
                size: 0x1000
            }),
            "adjacent regions are still two regions"
        );
        assert_eq!(
            registry.lookup_range(usize::MAX - 1, 4),
            Err(Error::NotInRegion {
                addr: usize::MAX - 1
            })
        );
    }

    #[test]
    fn no_fixed_capacity() {
        // Well past the seeds' 256 slots either way; fewer under miri, which is slow.
        let regions = if cfg!(miri) { 300 } else { 10_000usize };
        let registry = RegionRegistry::new();
        for i in 0..regions {
            registry.register(i * 0x2000, 0x1000, i).unwrap();
        }
        let last = regions - 1;
        assert_eq!(registry.lookup(last * 0x2000 + 5).map(|r| r.1), Some(last));
        assert_eq!(registry.unregister(0x2000), Some(1));
        assert!(!registry.contains(0x2000));
    }
}
