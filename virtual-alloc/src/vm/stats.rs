//! Counters of what the OS layer did.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A snapshot of a [`VirtualAlloc`](crate::VirtualAlloc)'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtualAllocStats {
    /// Regions currently reserved.
    pub regions: usize,
    /// Bytes of address space currently reserved.
    pub reserved_bytes: usize,
    /// Bytes currently committed.
    pub committed_bytes: usize,
    /// Successful reserve calls.
    pub reserves: u64,
    /// Successful commit calls.
    pub commits: u64,
    /// Successful decommit calls.
    pub decommits: u64,
    /// Successful release calls.
    pub releases: u64,
    /// Protect calls that changed the page tables (`Protect` regions).
    pub protect_syscalls: u64,
    /// Protect calls that made no system call (`MapJit`, `DualMap` and `Rwx` regions).
    pub protect_skipped: u64,
    /// Instruction-cache flushes.
    pub icache_flushes: u64,
    /// Pipelines of every thread synchronised ([`VirtualAlloc::sync_cores`]).
    ///
    /// [`VirtualAlloc::sync_cores`]: crate::VirtualAlloc::sync_cores
    pub core_syncs: u64,
}

/// The live counters. Plain std atomics even under loom: they order nothing.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reserved_bytes: AtomicUsize,
    pub(crate) committed_bytes: AtomicUsize,
    pub(crate) reserves: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) decommits: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) protect_syscalls: AtomicU64,
    pub(crate) protect_skipped: AtomicU64,
    pub(crate) icache_flushes: AtomicU64,
    pub(crate) core_syncs: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, regions: usize) -> VirtualAllocStats {
        VirtualAllocStats {
            regions,
            reserved_bytes: self.reserved_bytes.load(Relaxed),
            committed_bytes: self.committed_bytes.load(Relaxed),
            reserves: self.reserves.load(Relaxed),
            commits: self.commits.load(Relaxed),
            decommits: self.decommits.load(Relaxed),
            releases: self.releases.load(Relaxed),
            protect_syscalls: self.protect_syscalls.load(Relaxed),
            protect_skipped: self.protect_skipped.load(Relaxed),
            icache_flushes: self.icache_flushes.load(Relaxed),
            core_syncs: self.core_syncs.load(Relaxed),
        }
    }
}
