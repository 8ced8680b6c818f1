//! The heap's block records, in a slab whose freed places are reused.
//!
//! A block's handle carries its record's place, so what is done through a handle (free,
//! write, entry point) finds the record without a lookup. The place is trusted only while
//! the record there has the handle's block id: ids are unique in the process and a vacant
//! place holds none, so a stale handle, or one from another heap, is told apart from the
//! block that reused its place.
//!
//! What is done by address (`free_address`, `find`) finds the place through the block's
//! page instead: a small block's place is kept beside its page's chunk bitmaps
//! ([`Pages::place_at`](crate::page::Pages::place_at)), a large block's in the heap's
//! ordered map of large blocks. No hash map of block addresses is kept: it cost a hash
//! insert and a hash remove per block (about a tenth of an allocation and free of a small
//! block), and under a steady churn its deleted entries piled up until the table doubled
//! (hashbrown rebuilds in place only below half load), rehashing every entry under the
//! heap's lock.

use crate::block::BlockRecord;

/// Where a record sits in the slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place(pub(crate) u32);

/// The id of a vacant place's record: block ids start at 1.
const VACANT: u64 = 0;

#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    slab: Vec<BlockRecord>,
    /// Places of `slab` no live record holds.
    unused: Vec<u32>,
}

impl Records {
    /// Records a block and says where.
    #[inline]
    pub(crate) fn insert(&mut self, record: BlockRecord) -> Place {
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
        Place(place)
    }

    /// Forgets the live record at `place`.
    #[inline]
    pub(crate) fn remove(&mut self, place: Place) -> BlockRecord {
        let record = &mut self.slab[place.0 as usize];
        debug_assert_ne!(record.id, VACANT, "a live record's place");
        let removed = *record;
        record.id = VACANT;
        self.unused.push(place.0);
        removed
    }

    /// `place`, if the record there is block `id`'s: what a handle carries, checked.
    #[inline]
    pub(crate) fn checked(&self, place: Place, id: u64) -> Option<Place> {
        let record = self.slab.get(place.0 as usize)?;
        (record.id == id && id != VACANT).then_some(place)
    }

    /// `place`, if a live record holds it.
    #[inline]
    pub(crate) fn live(&self, place: Place) -> Option<Place> {
        let record = self.slab.get(place.0 as usize)?;
        (record.id != VACANT).then_some(place)
    }

    /// Whether the record at `place` is the live block at `addr`: a place kept by address,
    /// checked.
    #[inline]
    pub(crate) fn holds(&self, place: Place, addr: usize) -> bool {
        (self.slab.get(place.0 as usize))
            .is_some_and(|record| record.id != VACANT && record.addr == addr)
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

    /// Whether every place is either live or vacant and listed unused, once (for the
    /// invariant check; that addresses find their places is the heap's to check).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut listed = vec![false; self.slab.len()];
        for &place in &self.unused {
            let slot = listed
                .get_mut(place as usize)
                .ok_or_else(|| format!("unused place {place} is past the slab"))?;
            if core::mem::replace(slot, true) {
                return Err(format!("unused place {place} is listed twice"));
            }
            if self.slab[place as usize].id != VACANT {
                return Err(format!(
                    "unused place {place} holds block id {}",
                    self.slab[place as usize].id
                ));
            }
        }
        let lost = (self.slab.iter().zip(&listed))
            .position(|(record, &listed)| record.id == VACANT && !listed);
        match lost {
            Some(place) => Err(format!("place {place} is vacant but not listed unused")),
            None => Ok(()),
        }
    }

    /// Live records.
    pub(crate) fn len(&self) -> usize {
        self.slab.len() - self.unused.len()
    }

    /// Every live record and its place, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Place, &BlockRecord)> {
        (self.slab.iter().enumerate())
            .filter(|(_, record)| record.id != VACANT)
            .map(|(place, record)| (Place(place as u32), record))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &BlockRecord> {
        self.iter().map(|(_, record)| record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockState, Home};

    fn record(id: u64) -> BlockRecord {
        BlockRecord {
            id,
            addr: 0x1000 * id as usize,
            size: 64,
            home: Home::Large,
            state: BlockState::Fresh,
            open: false,
            large_writers: 0,
            floor: 0,
        }
    }

    #[test]
    fn freed_places_are_reused() {
        let mut records = Records::default();
        let places: Vec<Place> = (1..=4u64).map(|id| records.insert(record(id))).collect();
        assert_eq!(records.remove(places[1]).id, 2);
        assert_eq!(records.live(places[1]), None);
        assert_eq!(records.len(), 3);
        let reused = records.insert(record(9));
        // The freed place took the new record: the slab did not grow.
        assert_eq!(reused, places[1]);
        assert_eq!(records.slab.len(), 4);
        assert_eq!(records.len(), 4);
        assert_eq!(records.at(reused).id, 9);
        assert_eq!(records.live(reused), Some(reused));
        assert_eq!(records.live(Place(4)), None);
        // By address: only the live record of that block.
        assert!(records.holds(reused, 0x9000));
        assert!(!records.holds(reused, 0x2000));
        assert!(!records.holds(Place(4), 0x5000));
        records.at_mut(places[2]).state = BlockState::Finalized;
        assert_eq!(records.at(places[2]).state, BlockState::Finalized);
        let mut live: Vec<(u32, u64)> = records.iter().map(|(p, r)| (p.0, r.id)).collect();
        live.sort_unstable();
        assert_eq!(live, [(0, 1), (1, 9), (2, 3), (3, 4)]);
    }

    #[test]
    fn the_check_finds_a_place_that_is_lost_or_listed_wrongly() {
        let mut records = Records::default();
        let places: Vec<Place> = (1..=3u64).map(|id| records.insert(record(id))).collect();
        records.remove(places[1]);
        assert_eq!(records.check(), Ok(()));
        let mut lost = records.clone();
        lost.unused.clear();
        assert!(lost.check().is_err());
        let mut twice = records.clone();
        twice.unused = vec![places[1].0, places[1].0];
        assert!(twice.check().is_err());
        let mut live_listed = records.clone();
        live_listed.unused.push(places[0].0);
        assert!(live_listed.check().is_err());
        let mut past = records.clone();
        past.unused.push(7);
        assert!(past.check().is_err());
    }

    #[test]
    fn a_place_is_trusted_only_for_the_block_recorded_there() {
        let mut records = Records::default();
        let place = records.insert(record(1));
        assert_eq!(records.checked(place, 1), Some(place));
        // Another block's id (a stale handle whose place was reused, or a handle from
        // another heap) is refused, and so is a place past the slab.
        assert_eq!(records.checked(place, 2), None);
        assert_eq!(records.checked(Place(7), 1), None);
        records.remove(place);
        // Vacant: the freed block's own handle no longer matches.
        assert_eq!(records.checked(place, 1), None);
        assert_eq!(records.checked(place, VACANT), None);
        let again = records.insert(record(5));
        assert_eq!(again, place);
        assert_eq!(records.checked(place, 1), None);
        assert_eq!(records.checked(place, 5), Some(place));
    }
}
