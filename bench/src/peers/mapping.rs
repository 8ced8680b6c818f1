//! One mapping per function, as cranelift-jit's default provider, dynasmrt's buffers and
//! most hand-rolled JITs do it: map read-write, write, `mprotect` to read-execute, unmap on
//! free.

use dynasmrt::mmap::{ExecutableBuffer, MutableBuffer};
use memmap2::{Mmap, MmapMut};

use super::Peer;

/// A mapping that is writable, then executable.
#[derive(Debug)]
pub enum Mapping<W, X> {
    /// Mapped read-write: not yet emitted.
    Writable(W, usize),
    /// Mapped read-execute.
    Executable(X, usize),
    /// Between the two (only inside `emit`).
    Moving,
}

/// memmap2: `MmapMut::map_anon`, `make_exec`, drop.
#[derive(Debug, Default)]
pub struct Memmap2;

impl Peer for Memmap2 {
    type Block = Mapping<MmapMut, Mmap>;

    fn alloc(&mut self, size: usize) -> Self::Block {
        Mapping::Writable(MmapMut::map_anon(size).expect("mmap"), size)
    }

    fn emit(&mut self, block: &mut Self::Block, code: &[u8]) -> usize {
        let Mapping::Writable(mut map, size) = core::mem::replace(block, Mapping::Moving) else {
            panic!("emitted twice")
        };
        map[..code.len()].copy_from_slice(code);
        let map = map.make_exec().expect("mprotect");
        let entry = map.as_ptr() as usize;
        *block = Mapping::Executable(map, size);
        entry
    }

    fn free(&mut self, block: Self::Block) {
        drop(block);
    }

    fn span(&self, block: &Self::Block) -> (usize, usize) {
        match block {
            Mapping::Writable(map, size) => (map.as_ptr() as usize, *size),
            Mapping::Executable(map, size) => (map.as_ptr() as usize, *size),
            Mapping::Moving => unreachable!(),
        }
    }
}

/// region: `region::alloc` read-write, `region::protect` read-execute, drop.
#[derive(Debug, Default)]
pub struct RegionMap;

/// A `region` allocation and the size asked for.
pub struct RegionBlock {
    allocation: region::Allocation,
    size: usize,
}

impl core::fmt::Debug for RegionBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionBlock")
            .field("addr", &self.allocation.as_ptr::<u8>())
            .field("size", &self.size)
            .finish()
    }
}

impl Peer for RegionMap {
    type Block = RegionBlock;

    fn alloc(&mut self, size: usize) -> RegionBlock {
        let allocation = region::alloc(size, region::Protection::READ_WRITE).expect("region");
        RegionBlock { allocation, size }
    }

    fn emit(&mut self, block: &mut RegionBlock, code: &[u8]) -> usize {
        let base = block.allocation.as_mut_ptr::<u8>();
        assert!(code.len() <= block.allocation.len());
        // SAFETY: the allocation is read-write and at least `code.len()` bytes long.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), base, code.len()) };
        // SAFETY: the allocation's own pages; nothing runs or references them meanwhile.
        unsafe {
            region::protect(
                base,
                block.allocation.len(),
                region::Protection::READ_EXECUTE,
            )
        }
        .expect("mprotect");
        base as usize
    }

    fn free(&mut self, block: RegionBlock) {
        drop(block);
    }

    fn span(&self, block: &RegionBlock) -> (usize, usize) {
        (block.allocation.as_ptr::<u8>() as usize, block.size)
    }
}

/// dynasmrt: `MutableBuffer::new`, `make_exec`, drop.
#[derive(Debug, Default)]
pub struct DynasmBuffer;

impl Peer for DynasmBuffer {
    type Block = Mapping<MutableBuffer, ExecutableBuffer>;

    fn alloc(&mut self, size: usize) -> Self::Block {
        Mapping::Writable(MutableBuffer::new(size).expect("mmap"), size)
    }

    fn emit(&mut self, block: &mut Self::Block, code: &[u8]) -> usize {
        let Mapping::Writable(mut buffer, size) = core::mem::replace(block, Mapping::Moving) else {
            panic!("emitted twice")
        };
        buffer.set_len(code.len());
        buffer.copy_from_slice(code);
        let buffer = buffer.make_exec().expect("mprotect");
        let entry = buffer.as_ptr() as usize;
        *block = Mapping::Executable(buffer, size);
        entry
    }

    fn free(&mut self, block: Self::Block) {
        drop(block);
    }

    fn span(&self, block: &Self::Block) -> (usize, usize) {
        // The buffers deref to their written length only; their address is the mapping's.
        match block {
            Mapping::Writable(buffer, size) => (buffer.as_ptr() as usize, *size),
            Mapping::Executable(buffer, size) => (buffer.as_ptr() as usize, *size),
            Mapping::Moving => unreachable!(),
        }
    }
}
