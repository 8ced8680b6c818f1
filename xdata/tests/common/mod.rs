//! Shared test code.
pub mod roundtrip;
