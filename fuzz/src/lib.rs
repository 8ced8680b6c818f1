//! The drivers behind codeheap's fuzz targets, kept in a library so that `cargo test` can
//! run them on fixed inputs (including one that breaks an invariant on purpose) and the
//! fuzz targets stay one line each.
//!
//! Each driver takes a structured input (`arbitrary`), applies its operations to the real
//! crate on the simulated OS, and after every operation checks the crate's own invariants
//! and what a model of the operations says. It returns the first violation as an `Err`,
//! which the fuzz target turns into a crash.

pub mod eh_frame;
pub mod heap;
pub mod page_allocator;
pub mod registry;

/// `Err(what)` unless `ok`.
fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// A system call that can fail on a real machine, picked by `n`: `munmap` and `close` of
/// the crates' own mappings and descriptors do not, and the teardown paths say so.
fn failing_call(n: u8) -> codeheap_virtual_alloc::SysCall {
    use codeheap_virtual_alloc::SysCall::*;
    const CALLS: [codeheap_virtual_alloc::SysCall; 6] =
        [Mmap, Mprotect, Madvise, MemfdCreate, Ftruncate, Fallocate];
    CALLS[usize::from(n) % CALLS.len()]
}
