//! Helpers shared by codeheap's tests (std only, so any crate's tests can use them).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod child;
pub mod maps;
mod proptest_config;

pub use proptest_config::{SIM_CASES_VAR, proptest_config, sim_proptest_config};
