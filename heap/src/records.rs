//! The heap's block records, found by block address or by the place a handle carries.
//!
//! The records sit in a slab (a vector whose freed places are reused) and a hash map takes
//! an address to its place. A map holding the records themselves would cost more: under a
//! steady churn its deleted entries pile up until the table doubles (hashbrown rebuilds in
//! place only below half load), so each record's bytes would be paid two to four times
//! over; here only the four-byte places are.
//!
//! A block's handle carries its record's place, so what is done through a handle (free,
//! write, entry point) finds the record without hashing the address. The place is trusted
//! only while the record there has the handle's block id: ids are unique in the process
//! and a vacant place holds none, so a stale handle, or one from another heap, is told
//! apart from the block that reused its place.

use crate::addr_hash::AddrMap;
use crate::block::BlockRecord;

/// Where a record sits in the slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place(u32);

/// The id of a vacant place's record: block ids start at 1.
const VACANT: u64 = 0;

#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    slab: Vec<BlockRecord>,
    /// Places of `slab` no live record holds.
    unused: Vec<u32>,
    /// Block address to its place in `slab`.
    places: AddrMap<u32>,
}

impl Records {
    /// Records the block at `addr`, which has no record, and says where.
    pub(crate) fn insert(&mut self, addr: usize, record: BlockRecord) -> Place {
        debug_assert_ne!(record.id, VACANT, "block ids start at 1");
        let place = match self.unused.pop() {
            Some(place) => {
                self.slab[place as usize] = record;
                place
            }
            None => {
                self.slab.push(record);
                u32::try_from(self.slab.len() - 1).expect("fewer than 2^32 live blocks")
            }
        };
        let previous = self.places.insert(addr, place);
        debug_assert!(previous.is_none(), "{addr:#x} had a record");
        Place(place)
    }

    /// Forgets the block at `addr`, whose record is at `place`.
    pub(crate) fn remove(&mut self, addr: usize, place: Place) -> BlockRecord {
        let removed = self.places.remove(&addr);
        debug_assert_eq!(removed, Some(place.0), "{addr:#x} is recorded at its place");
        self.unused.push(place.0);
        let record = &mut self.slab[place.0 as usize];
        let removed = *record;
        record.id = VACANT;
        removed
    }

    /// Where the record of the block at `addr` is, if it has one.
    #[inline]
    pub(crate) fn place_of(&self, addr: &usize) -> Option<Place> {
        self.places.get(addr).map(|&place| Place(place))
    }

    /// `place`, if the record there is block `id`'s: what a handle carries, checked.
    #[inline]
    pub(crate) fn checked(&self, place: Place, id: u64) -> Option<Place> {
        let record = self.slab.get(place.0 as usize)?;
        (record.id == id && id != VACANT).then_some(place)
    }

    /// The record at `place`, which a live record holds.
    #[inline]
    pub(crate) fn at(&self, place: Place) -> &BlockRecord {
        let record = &self.slab[place.0 as usize];
        debug_assert_ne!(record.id, VACANT, "a live record's place");
        record
    }

    /// The record at `place`, which a live record holds, to change.
    #[inline]
    pub(crate) fn at_mut(&mut self, place: Place) -> &mut BlockRecord {
        let record = &mut self.slab[place.0 as usize];
        debug_assert_ne!(record.id, VACANT, "a live record's place");
        record
    }

    /// The record of the block at `addr`, if it has one.
    #[inline]
    pub(crate) fn get(&self, addr: &usize) -> Option<&BlockRecord> {
        Some(self.at(self.place_of(addr)?))
    }

    /// The record of the block at `addr`, if it has one, to change.
    #[inline]
    pub(crate) fn get_mut(&mut self, addr: &usize) -> Option<&mut BlockRecord> {
        let place = self.place_of(addr)?;
        Some(self.at_mut(place))
    }

    /// Whether the slab agrees with the map: each place held by exactly one address, and
    /// every other place vacant and listed unused once (for the invariant check).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut held = vec![false; self.slab.len()];
        for (&addr, &place) in &self.places {
            let slot = held
                .get_mut(place as usize)
                .ok_or_else(|| format!("{addr:#x} is recorded past the slab, at {place}"))?;
            if core::mem::replace(slot, true) {
                return Err(format!("place {place} is held twice (once by {addr:#x})"));
            }
            if self.slab[place as usize].id == VACANT {
                return Err(format!("{addr:#x} is recorded at vacant place {place}"));
            }
        }
        for &place in &self.unused {
            let slot = held
                .get_mut(place as usize)
                .ok_or_else(|| format!("unused place {place} is past the slab"))?;
            if core::mem::replace(slot, true) {
                return Err(format!("unused place {place} is live or listed twice"));
            }
            if self.slab[place as usize].id != VACANT {
                return Err(format!(
                    "unused place {place} holds block id {}",
                    self.slab[place as usize].id
                ));
            }
        }
        match held.iter().position(|&held| !held) {
            Some(place) => Err(format!("place {place} is neither live nor unused")),
            None => Ok(()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }

    /// Every live block's address and record, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&usize, &BlockRecord)> {
        (self.places.iter()).map(|(addr, &place)| (addr, &self.slab[place as usize]))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &BlockRecord> {
        self.iter().map(|(_, record)| record)
    }
}

impl core::ops::Index<&usize> for Records {
    type Output = BlockRecord;

    fn index(&self, addr: &usize) -> &BlockRecord {
        self.get(addr).expect("a live block's record")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockState, Home};

    fn record(id: u64) -> BlockRecord {
        BlockRecord {
            id,
            size: 64,
            capacity: 128,
            write_addr: 0,
            home: Home::Large { pages: 1 },
            state: BlockState::Fresh,
            large_writers: 0,
            open: false,
        }
    }

    #[test]
    fn freed_places_are_reused_and_records_found_by_address() {
        let mut records = Records::default();
        let places: Vec<Place> = (1..=4u64)
            .map(|id| records.insert(0x1000 * id as usize, record(id)))
            .collect();
        assert_eq!(records.remove(0x2000, places[1]).id, 2);
        assert!(records.get(&0x2000).is_none());
        assert_eq!(records.place_of(&0x2000), None);
        let reused = records.insert(0x9000, record(9));
        // The freed place took the new record: the slab did not grow.
        assert_eq!(reused, places[1]);
        assert_eq!(records.slab.len(), 4);
        assert_eq!(records.len(), 4);
        assert_eq!(records.get(&0x9000).map(|r| r.id), Some(9));
        assert_eq!(records.place_of(&0x3000), Some(places[2]));
        records.at_mut(places[2]).state = BlockState::Finalized;
        assert_eq!(records.at(places[2]).state, BlockState::Finalized);
        let mut ids: Vec<u64> = records.values().map(|r| r.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 3, 4, 9]);
    }

    #[test]
    fn the_check_finds_a_place_that_is_lost_or_held_twice() {
        let mut records = Records::default();
        let places: Vec<Place> = (1..=3u64)
            .map(|id| records.insert(0x1000 * id as usize, record(id)))
            .collect();
        records.remove(0x2000, places[1]);
        assert_eq!(records.check(), Ok(()));
        let mut lost = records.clone();
        lost.unused.clear();
        assert!(lost.check().is_err());
        lost.unused = vec![places[1].0, places[1].0];
        assert!(lost.check().is_err());
        let mut twice = records.clone();
        twice.places.insert(0x9000, places[0].0);
        assert!(twice.check().is_err());
        let mut vacant = records.clone();
        vacant.slab[places[2].0 as usize].id = VACANT;
        assert!(vacant.check().is_err());
    }

    #[test]
    fn a_place_is_trusted_only_for_the_block_recorded_there() {
        let mut records = Records::default();
        let place = records.insert(0x1000, record(1));
        assert_eq!(records.checked(place, 1), Some(place));
        // Another block's id (a stale handle whose place was reused, or a handle from
        // another heap) is refused, and so is a place past the slab.
        assert_eq!(records.checked(place, 2), None);
        assert_eq!(records.checked(Place(7), 1), None);
        records.remove(0x1000, place);
        // Vacant: the freed block's own handle no longer matches.
        assert_eq!(records.checked(place, 1), None);
        assert_eq!(records.checked(place, VACANT), None);
        let again = records.insert(0x2000, record(5));
        assert_eq!(again, place);
        assert_eq!(records.checked(place, 1), None);
        assert_eq!(records.checked(place, 5), Some(place));
    }
}
