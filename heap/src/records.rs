//! The heap's block records, found by block address.
//!
//! The records sit in a slab (a vector whose freed places are reused) and a hash map takes
//! an address to its place. A map holding the records themselves would cost more: under a
//! steady churn its deleted entries pile up until the table doubles (hashbrown rebuilds in
//! place only below half load), so each record's bytes would be paid two to four times
//! over; here only the four-byte places are.

use crate::addr_hash::AddrMap;
use crate::block::BlockRecord;

#[derive(Debug, Default)]
pub(crate) struct Records {
    slab: Vec<BlockRecord>,
    /// Places of `slab` no live record holds.
    unused: Vec<u32>,
    /// Block address to its place in `slab`.
    places: AddrMap<u32>,
}

impl Records {
    /// Records the block at `addr`, which has no record.
    pub(crate) fn insert(&mut self, addr: usize, record: BlockRecord) {
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
    }

    /// Forgets the block at `addr`.
    pub(crate) fn remove(&mut self, addr: &usize) -> Option<BlockRecord> {
        let place = self.places.remove(addr)?;
        self.unused.push(place);
        Some(self.slab[place as usize])
    }

    #[inline]
    pub(crate) fn get(&self, addr: &usize) -> Option<&BlockRecord> {
        let &place = self.places.get(addr)?;
        Some(&self.slab[place as usize])
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, addr: &usize) -> Option<&mut BlockRecord> {
        let &place = self.places.get(addr)?;
        Some(&mut self.slab[place as usize])
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
        for i in 0..4u64 {
            records.insert(0x1000 * (i as usize + 1), record(i));
        }
        assert_eq!(records.remove(&0x2000).map(|r| r.id), Some(1));
        assert_eq!(records.remove(&0x2000).map(|r| r.id), None);
        assert!(records.get(&0x2000).is_none());
        records.insert(0x9000, record(9));
        // The freed place took the new record: the slab did not grow.
        assert_eq!(records.slab.len(), 4);
        assert_eq!(records.len(), 4);
        assert_eq!(records[&0x9000].id, 9);
        assert_eq!(records[&0x3000].id, 2);
        records.get_mut(&0x3000).expect("live").state = BlockState::Finalized;
        assert_eq!(records[&0x3000].state, BlockState::Finalized);
        let mut ids: Vec<u64> = records.values().map(|r| r.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 2, 3, 9]);
    }
}
