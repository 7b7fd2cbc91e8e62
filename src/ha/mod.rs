//! Replicas: which of them emits. Several replicas watch the same cluster, each with its own
//! filters, and agree through one `coordination.k8s.io/v1` Lease on which of them emits; the
//! Lease also carries the leader's delivery watermark, so a standby knows what it need not emit
//! again when it takes over.
//!
//! Read in this order: [`lease`] reads and writes the Lease; [`decide`] is what one replica
//! makes of a read (expiry on its own monotonic clock, the race for an expired Lease);
//! [`elector`] attempts once per retry period and turns the answers into a [`elector::Role`];
//! [`fence`] keeps a replica that lost the Lease from writing; [`election`] is what the elector
//! tells a pipe and what the pipe publishes back; [`supervisor`] restarts the pipe after a
//! step-down and releases the Lease at the end.

pub mod decide;
pub mod election;
pub mod elector;
pub mod fence;
pub mod lease;
pub mod supervisor;

pub use decide::{Attempt, Observed};
pub use election::{Election, Link, Published, Standing};
pub use elector::Elector;
pub use fence::{Fence, FenceState};
pub use lease::{LeaderError, LeaseConfig, WATERMARK_ANNOTATION};
