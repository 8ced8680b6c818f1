//! Shared test code.
pub mod jit_calls;
pub mod scenario;
