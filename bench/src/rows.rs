//! The rows of every table: which allocator, set up how.

use codeheap::{SizeClasses, WxStrategy};

use crate::peers::{
    Bump, CodeHeap, DynasmBuffer, JitAlloc, JitAllocLocked, Memmap2, Peer, RegionMap,
};

/// One allocator in one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// codeheap with a strategy, called on its exclusive view (no lock), as the workloads
    /// own their allocator.
    Codeheap(WxStrategy),
    /// codeheap under `DualMap` called through `&Heap`, taking its lock, as threads that
    /// share the heap call it.
    CodeheapShared,
    /// codeheap under `DualMap` with `SizeClasses::Chunks`: requests rounded to whole
    /// chunks, not powers of two.
    CodeheapChunks,
    /// jit-allocator with its defaults (dual mapping on).
    JitAllocator,
    /// The same behind a `Mutex`, as threads share it (its calls take `&mut self`).
    JitAllocatorLocked,
    /// One memmap2 mapping per function.
    Memmap2,
    /// One region allocation per function.
    Region,
    /// One dynasmrt buffer per function.
    Dynasmrt,
    /// A bump pointer over one RWX mapping: the floor.
    Bump,
}

/// Something to do with a row's allocator, whatever its type.
pub trait RowVisitor {
    /// What it gives back.
    type Output;
    /// Does it with `peer`.
    fn visit<P: Peer + 'static>(self, peer: P) -> Self::Output;
}

impl Row {
    /// Every row, in table order, whether or not this machine can run it.
    pub const ALL: [Row; 12] = [
        Row::Codeheap(WxStrategy::MapJit),
        Row::Codeheap(WxStrategy::DualMap),
        Row::CodeheapShared,
        Row::CodeheapChunks,
        Row::Codeheap(WxStrategy::Protect),
        Row::Codeheap(WxStrategy::Rwx),
        Row::JitAllocator,
        Row::JitAllocatorLocked,
        Row::Memmap2,
        Row::Region,
        Row::Dynasmrt,
        Row::Bump,
    ];

    /// The rows this machine can run.
    pub fn available() -> Vec<Row> {
        Row::ALL.into_iter().filter(|row| row.runs_here()).collect()
    }

    /// Whether this machine can run the row.
    pub fn runs_here(self) -> bool {
        match self {
            Row::Codeheap(strategy) => CodeHeap::new(strategy).is_some(),
            Row::CodeheapShared | Row::CodeheapChunks => {
                Row::Codeheap(WxStrategy::DualMap).runs_here()
            }
            _ => true,
        }
    }

    /// The row's name in tables and on the command line.
    pub fn name(self) -> String {
        match self {
            Row::Codeheap(strategy) => format!("codeheap {strategy}"),
            Row::CodeheapShared => "codeheap dual-map, shared (&Heap)".to_string(),
            Row::CodeheapChunks => "codeheap dual-map, chunk classes".to_string(),
            Row::JitAllocator => "jit-allocator".to_string(),
            Row::JitAllocatorLocked => "jit-allocator + Mutex".to_string(),
            Row::Memmap2 => "memmap2 (map/fn)".to_string(),
            Row::Region => "region (map/fn)".to_string(),
            Row::Dynasmrt => "dynasmrt (map/fn)".to_string(),
            Row::Bump => "bump RWX (floor)".to_string(),
        }
    }

    /// A short name without spaces, for file names and child processes.
    pub fn key(self) -> String {
        match self {
            Row::Codeheap(strategy) => format!("codeheap-{strategy}"),
            Row::CodeheapShared => "codeheap-dual-map-shared".to_string(),
            Row::CodeheapChunks => "codeheap-dual-map-chunks".to_string(),
            Row::JitAllocator => "jit-allocator".to_string(),
            Row::JitAllocatorLocked => "jit-allocator-locked".to_string(),
            Row::Memmap2 => "memmap2".to_string(),
            Row::Region => "region".to_string(),
            Row::Dynasmrt => "dynasmrt".to_string(),
            Row::Bump => "bump".to_string(),
        }
    }

    /// The row whose [`key`](Row::key) is `key`.
    pub fn from_key(key: &str) -> Option<Row> {
        Row::ALL.into_iter().find(|row| row.key() == key)
    }

    /// Whether the row gives each function a mapping of its own.
    pub fn maps_per_function(self) -> bool {
        matches!(self, Row::Memmap2 | Row::Region | Row::Dynasmrt)
    }

    /// Runs `visitor` with a new allocator of this row; `None` if this machine cannot.
    pub fn visit<V: RowVisitor>(self, visitor: V) -> Option<V::Output> {
        Some(match self {
            Row::Codeheap(strategy) => visitor.visit(CodeHeap::new(strategy)?),
            Row::CodeheapShared => visitor.visit(CodeHeap::new(WxStrategy::DualMap)?.shared()),
            Row::CodeheapChunks => visitor.visit(CodeHeap::with_classes(
                WxStrategy::DualMap,
                SizeClasses::Chunks,
            )?),
            Row::JitAllocator => visitor.visit(JitAlloc::new()),
            Row::JitAllocatorLocked => visitor.visit(JitAllocLocked::new()),
            Row::Memmap2 => visitor.visit(Memmap2),
            Row::Region => visitor.visit(RegionMap),
            Row::Dynasmrt => visitor.visit(DynasmBuffer),
            Row::Bump => visitor.visit(Bump::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Row;

    #[test]
    fn keys_name_rows_back() {
        for row in Row::ALL {
            assert_eq!(Row::from_key(&row.key()), Some(row));
        }
    }
}
