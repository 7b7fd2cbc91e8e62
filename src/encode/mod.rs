//! Encoders: pure functions from records to bytes, testable without I/O.

pub mod json;
pub mod object;
pub mod priors;
pub mod proto;
