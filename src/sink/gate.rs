//! What a sink asks before each write: whether it may write now. Sinks know nothing of why
//! (leader election shuts the gate of a replica that lost its Lease, see `crate::ha::Fence`), so
//! they depend on this trait only.

use std::sync::Arc;

/// Whether a sink may write now. Checked before every attempt, so a gate that shuts stops the
/// sink within one write.
pub trait WriteGate: Send + Sync + std::fmt::Debug {
    fn may_write(&self) -> bool;
}

/// The gate of a replica running alone: always open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open;

impl WriteGate for Open {
    fn may_write(&self) -> bool {
        true
    }
}

/// The always-open gate, shared.
pub fn open() -> Arc<dyn WriteGate> {
    Arc::new(Open)
}
