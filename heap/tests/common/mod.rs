//! Shared test code.
pub mod child;
pub mod scenario;
