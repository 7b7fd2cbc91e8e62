//! Encoders: pure functions from records to bytes, testable without I/O.

pub mod json;
pub mod object;
pub mod priors;
pub mod proto;

/// The shape of each output line. Defined here, beside the encoders that write it, so the
/// configuration imports the encoders' vocabulary and never the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The Event object as received, one per line, as the Python kube-event-pipe writes it.
    Raw,
    /// eventrouter's `{"verb", "event", "old_event"}` wrapper, for EFK pipelines built on it.
    Eventrouter,
}
