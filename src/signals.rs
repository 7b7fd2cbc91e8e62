//! Process signals as the pipe's own commands: reopen the output, or shut down.
//!
//! HUP reopens the output file (logrotate `create` mode). TERM, INT and QUIT start a graceful
//! shutdown; a second one ends the process at once, with status 128 + its number, which loses
//! nothing either: whatever was in flight is simply not committed and is delivered again by the
//! next run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What a received signal asks of the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    ReopenOutput,
    Shutdown,
}

pub fn command_for(signal: i32) -> Option<Command> {
    match signal {
        SIGHUP => Some(Command::ReopenOutput),
        SIGTERM | SIGINT | SIGQUIT => Some(Command::Shutdown),
        _ => None,
    }
}

/// Installs the handlers and spawns the task that turns signals into commands.
pub fn install(shutdown: CancellationToken, reopen: Arc<AtomicBool>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGQUIT])?;
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match command_for(signal) {
                Some(Command::ReopenOutput) => {
                    info!("SIGHUP: reopening the output file before the next write");
                    reopen.store(true, Ordering::Release);
                }
                Some(Command::Shutdown) if shutdown.is_cancelled() => {
                    warn!(
                        signal,
                        "second shutdown signal: exiting now; in-flight events stay uncommitted"
                    );
                    // The shell's convention for death by a signal: 128 + its number.
                    std::process::exit(128 + signal);
                }
                Some(Command::Shutdown) => {
                    info!(signal, "shutdown requested");
                    shutdown.cancel();
                }
                None => {}
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangup_reopens_and_termination_signals_shut_down() {
        assert_eq!(command_for(SIGHUP), Some(Command::ReopenOutput));
        for s in [SIGTERM, SIGINT, SIGQUIT] {
            assert_eq!(command_for(s), Some(Command::Shutdown));
        }
        assert_eq!(command_for(signal_hook::consts::SIGUSR1), None);
    }
}
