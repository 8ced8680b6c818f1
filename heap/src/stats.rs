//! What the heap holds and has done.

/// One bucket of small blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Bytes per block in this bucket.
    pub block_size: usize,
    /// Pages serving the bucket (with free chunks or full). Under
    /// [`SizeClasses::Chunks`](crate::SizeClasses::Chunks) pages are not a bucket's: a page
    /// counts in the bucket of the largest block its longest free run takes, a full page in
    /// the last bucket.
    pub pages: usize,
    /// Of those, the full ones.
    pub full_pages: usize,
    /// Live blocks of this size.
    pub blocks: usize,
    /// Bytes those blocks occupy.
    pub used_bytes: usize,
}

/// A snapshot of a [`Heap`](crate::Heap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// The small buckets, smallest first.
    pub buckets: Vec<BucketStats>,
    /// Live large blocks.
    pub large_blocks: usize,
    /// Bytes they occupy.
    pub large_bytes: usize,
    /// Live blocks, small and large.
    pub live_blocks: usize,
    /// Bytes asked for by live blocks.
    pub requested_bytes: usize,
    /// Bytes live blocks occupy.
    pub allocated_bytes: usize,
    /// `allocated_bytes - requested_bytes`: lost to rounding to size classes and pages.
    pub rounding_loss: usize,
    /// Freed small blocks kept for the next allocation of their size
    /// ([`HeapConfig::keep_freed_blocks`](crate::HeapConfig::keep_freed_blocks)): not live,
    /// trap-filled, still taken on their pages.
    pub kept_blocks: usize,
    /// Bytes they occupy.
    pub kept_bytes: usize,
    /// Freed large blocks kept for the next allocation of their page count
    /// ([`HeapConfig::keep_freed_blocks`](crate::HeapConfig::keep_freed_blocks)): not live,
    /// trap-filled, execute-read, still held from the page allocator.
    pub kept_large_blocks: usize,
    /// Bytes they occupy.
    pub kept_large_bytes: usize,
    /// Empty pages kept for reuse.
    pub spare_pages: usize,
    /// Pages decommitted by `decommit_all` and still holding blocks.
    pub parked_pages: usize,
    /// Memory committed underneath (pages and secondary areas).
    pub committed_bytes: usize,
    /// Address space reserved underneath.
    pub reserved_bytes: usize,
    /// Protection changes that made a system call (`Protect`).
    pub protect_calls_made: u64,
    /// Protection changes that needed none (`MapJit`, `DualMap`, `Rwx`).
    pub protect_calls_skipped: u64,
    /// Trap fills (new pages, freed blocks, finalized tails).
    pub fills: u64,
    /// Bytes trap-filled.
    pub filled_bytes: u64,
    /// Instruction-cache flushes.
    pub icache_flushes: u64,
    /// Pages taken from the page allocator.
    pub pages_acquired: u64,
    /// Pages given back to it.
    pub pages_released: u64,
    /// Successful allocations.
    pub allocs: u64,
    /// Successful frees.
    pub frees: u64,
    /// Pages asked for an unwind slot (each a request to the page allocator), found or
    /// refused: about one per block with an unwind entry, however many segments are full.
    pub secondary_probes: u64,
    /// Live patches made ([`Heap::patch`](crate::Heap::patch)).
    pub patches: u64,
}
