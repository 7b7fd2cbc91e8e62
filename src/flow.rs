//! The messages that pass between stages, in the order the data flows: a source hands
//! `SourceBatch`es (inside its `source::SourceMsg`s) to the dedup stage, which hands `Accepted`
//! events in chunks (through enrichment) to the batcher, which hands `Batch`es to every sink,
//! which hand `BatchAck`s back to the dedup stage; the elector and the dedup stage exchange
//! `Standing` and `Published`.
//!
//! They live here, not in the stage that makes them, so that no stage imports a later one; this
//! module imports no stage. (`SourceMsg` lives with the sources: it carries their error, and
//! only the later stages read it.)

use std::sync::Arc;
use std::time::SystemTime;

use crate::event::{EventRecord, OccurrenceKey, RawJson};

/// Records handed from a source to the pipeline in one channel message.
pub type SourceBatch = Vec<EventRecord>;

/// The most records in one [`SourceBatch`]: a list page or a burst of watch lines is split into
/// hand-offs of this size (a quieter stream is handed off as each read ends). Also the most
/// events in one [`AcceptedChunk`], so the chunk the dedup stage is filling stays within the one
/// hand-off the in-flight bound already counts.
pub const HANDOFF_RECORDS: usize = 256;

/// An event accepted by the dedup stage, with the prior version of its object when the output
/// format wants one.
#[derive(Debug)]
pub struct Accepted {
    pub record: EventRecord,
    pub prior: Option<RawJson>,
    /// The `enrichment` object, when enrichment is on and found something.
    pub enrichment: Option<Box<str>>,
}

/// Accepted events handed on together: one channel message per source hand-off (at most
/// [`HANDOFF_RECORDS`] events), so the stages wake each other once per read, not once per event.
pub type AcceptedChunk = Vec<Accepted>;

/// Encoded lines and the occurrence keys they deliver.
#[derive(Debug)]
pub struct Batch {
    /// Counts batches within one run, from 0; acks are matched on it.
    pub seq: u64,
    /// JSON lines, each with its newline: what stdout and the file get, and what every other
    /// sink turns into its own records.
    pub bytes: Vec<u8>,
    /// Length-delimited protobuf records, only when a sink asked for them (building them
    /// parses every event, which the line sinks must not pay for).
    pub records: Option<Vec<u8>>,
    /// Keys to commit once every sink has the bytes. DELETED records (when emitted) have none.
    pub keys: Vec<OccurrenceKey>,
    pub events: usize,
    /// When the batch's first event was accepted; it names the batch's S3 object.
    pub opened_at: SystemTime,
}

impl Batch {
    /// The batch's lines, without their newlines.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
    }
}

/// One sink has a batch durably.
#[derive(Debug)]
pub struct BatchAck {
    /// The sink's index in the configured list.
    pub sink: usize,
    pub batch: Arc<Batch>,
}

/// What the elector tells the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// This replica holds the Lease and may emit.
    pub leading: bool,
    /// The watermark in the Lease as last read: the leader's while this replica stands by; on
    /// a takeover, the previous holder's last one (what the new leader need not emit again).
    pub watermark: Option<u64>,
}

/// What the pipe publishes for the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// Its watermark (see [`crate::dedup::replica::Replica::watermark`]).
    pub watermark: Option<u64>,
    /// Events wait for the watermark to move: accepted and not committed on a leader, held on a
    /// standby. The watermark's age counts only while something waits.
    pub waiting: bool,
}
