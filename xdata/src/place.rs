//! Putting an entry into the secondary-area slot reserved for it.

use codeheap_page_allocator::SecondarySlot;
use codeheap_virtual_alloc::{Os, VirtualAlloc, WriteScope};

use crate::eh_frame::EhFrameEntry;
use crate::error::{Error, Result};
use crate::register::WrittenEntry;

/// Writes `entry`, which describes the `len` bytes of code at `pc`, into `slot` (through
/// the region's writable view, in write mode: secondary pages of a MAP_JIT region follow the
/// thread's mode like its code pages).
pub fn write_entry<O: Os>(
    vm: &VirtualAlloc<O>,
    slot: &SecondarySlot,
    entry: &EhFrameEntry,
    pc: usize,
    len: usize,
) -> Result<WrittenEntry> {
    let bytes = entry.bytes();
    if bytes.len() > slot.size {
        return Err(Error::SlotTooSmall {
            needed: bytes.len(),
            slot: slot.size,
        });
    }
    let _write = WriteScope::enter();
    vm.write(slot.addr, bytes)?;
    Ok(WrittenEntry {
        addr: slot.addr,
        fde: slot.addr + entry.fde_offset(),
        pc,
        len,
    })
}

#[cfg(test)]
mod tests {
    use codeheap_virtual_alloc::sim::SimOs;
    use codeheap_virtual_alloc::{Arch, Protection};

    use super::*;
    use crate::frame::FrameDescription;

    /// An entry fills a slot of exactly its size; one byte less is refused, with nothing
    /// written.
    #[test]
    fn an_entry_fits_a_slot_of_its_own_size_and_no_less() {
        let vm = VirtualAlloc::new(SimOs::linux());
        let region = vm
            .reserve_and_commit(vm.page_size(), Protection::ReadWrite)
            .unwrap();
        let frame = FrameDescription::standard(Arch::X86_64);
        let entry = EhFrameEntry::build(&frame, 0x1000, 64).unwrap();
        let size = entry.bytes().len();
        let slot = |size| SecondarySlot {
            addr: region.base,
            size,
            segment: region.base,
        };

        assert_eq!(
            write_entry(&vm, &slot(size - 1), &entry, 0x1000, 64),
            Err(Error::SlotTooSmall {
                needed: size,
                slot: size - 1
            })
        );
        let mut written = vec![0xFF; size];
        vm.read(region.base, &mut written).unwrap();
        assert_eq!(written, vec![0; size], "nothing written");

        let placed = write_entry(&vm, &slot(size), &entry, 0x1000, 64).unwrap();
        assert_eq!(
            (placed.addr, placed.fde),
            (region.base, region.base + entry.fde_offset())
        );
        assert_eq!((placed.pc, placed.len), (0x1000, 64));
        vm.read(region.base, &mut written).unwrap();
        assert_eq!(written, entry.bytes());
    }
}
