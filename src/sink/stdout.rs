//! The stdout sink: JSON lines for a log shipper reading the container's output.

use std::io::Write;

use super::SinkError;

#[derive(Default)]
pub struct StdoutSink;

impl StdoutSink {
    /// Writes and flushes `bytes`. A closed pipe (`| head`, a log agent that went away) is
    /// reported as `SinkError::Closed` so the pipe can end quietly.
    pub fn write(&mut self, bytes: &[u8], written: &mut usize) -> Result<(), SinkError> {
        let mut out = std::io::stdout().lock();
        let result = out.write_all(&bytes[*written..]).and_then(|()| out.flush());
        match result {
            Ok(()) => {
                *written = bytes.len();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(SinkError::Closed),
            Err(source) => Err(SinkError::Write {
                sink: "stdout".into(),
                source,
            }),
        }
    }
}
