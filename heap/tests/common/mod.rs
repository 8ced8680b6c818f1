//! Shared test code.
pub mod child;
pub mod jit_calls;
pub mod scenario;
