//! The stdout sink: JSON lines for a log shipper reading the container's output.

use std::io::Write;

use super::{DeliverBlocking, Failure, Sink};
use std::sync::Arc;

use crate::flow::Batch;

pub fn open() -> Sink {
    Sink::from_blocking("stdout", "stdout", "stdout".into(), StdoutSink::default())
}

#[derive(Default)]
pub struct StdoutSink {
    /// How much of the batch being written reached stdout in earlier, failed attempts.
    resume: Option<(u64, usize)>,
}

impl DeliverBlocking for StdoutSink {
    /// Writes and flushes the batch. A closed pipe (`| head`, a log agent that went away) is
    /// [`Failure::Closed`], so the pipe ends quietly.
    fn deliver(&mut self, batch: &Arc<Batch>) -> Result<(), Failure> {
        let mut written = match self.resume {
            Some((seq, n)) if seq == batch.seq => n,
            _ => 0,
        };
        let mut out = std::io::stdout().lock();
        let mut result = Ok(());
        while written < batch.bytes.len() {
            match out.write(&batch.bytes[written..]) {
                Ok(0) => {
                    result = Err(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let result = result.and_then(|()| out.flush());
        self.resume = Some((batch.seq, written));
        match result {
            Ok(()) => {
                self.resume = None;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Closed),
            Err(e) => Err(Failure::io("writing to stdout failed", &e)),
        }
    }
}
