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
