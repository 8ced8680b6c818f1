//! Benchmarks of codeheap against the other ways a JIT gets executable memory.
//!
//! The same workloads run over every [`Peer`]: codeheap under each W^X strategy the machine
//! offers, jit-allocator (the Rust port of asmjit's allocator), one mapping per function
//! through memmap2, region or dynasmrt, and a bump allocator over one RWX mapping (the
//! floor of this machine: no bookkeeping, no W^X, no system call).
//!
//! * [`workload::W1`]: alloc + free pairs over a live set, sizes from [`sizes::Sizes::Mix`].
//! * [`workload::W2`]: emit a 256-byte function, run it once, free the oldest of the live set.
//! * [`memory`]: committed bytes and PSS growth after a long churn (run in a child process).
//! * [`race`]: a writer thread emitting while an executor thread calls the newest functions.
//! * [`overlap`]: a churn that checks no two live blocks overlap and that no block is
//!   overwritten by another's allocation or free.
//!
//! `cargo bench -p codeheap-bench` runs the criterion benchmarks;
//! `cargo run --release -p codeheap-bench --bin bench-report` prints the tables of
//! `docs/benchmarks.md`.

pub mod churn;
pub mod code;
pub mod memory;
pub mod overlap;
pub mod peers;
pub mod race;
pub mod rows;
pub mod sizes;
pub mod workload;

pub use peers::Peer;
pub use rows::{Row, RowVisitor};
