//! The kube-event-pipe binary: parse the configuration, run the pipe, map the outcome to an
//! exit status (0 done, 1 runtime failure, 2 bad configuration, 3 accepted events left
//! undelivered; a second shutdown signal exits with 128 + its number, in `signals`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use kube_event_pipe::config::{self, Cli, Command, LogFormat, SourceConfig};
use kube_event_pipe::encode::object;
use kube_event_pipe::health::Health;
use kube_event_pipe::{dedup, ha, pipeline, signals, sink, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Some(Command::Inspect(args)) => report(inspect(&args)),
        Some(Command::Decode(args)) => {
            let connection = match config::decode_connection(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            report(decode(&args, &connection))
        }
        None => {
            let config = match config::build(&matches) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init_logging(&config.log_filter, config.log_format);
            let timeout = config.shutdown_timeout;
            match run(config) {
                Ok(outcome) => finished(&outcome, timeout),
                Err(e) => report(Err(e)),
            }
        }
    }
}

/// The pipe ended with events it accepted but could not deliver to every sink.
const EXIT_UNDELIVERED: u8 = 3;

/// The status of a run that ended without an error: 0, unless accepted events were left
/// undelivered when the shutdown timeout passed. A script that removes its replay input on
/// success must not do so then. (A reader closing stdout is how `| head` ends: status 0.)
fn finished(outcome: &pipeline::Report, timeout: Duration) -> ExitCode {
    let undelivered = outcome.tally.undelivered();
    if outcome.end == pipeline::EndReason::StdoutClosed || undelivered == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "error: {undelivered} accepted events were not delivered to every sink when the shutdown timeout ({}s) passed; they are not committed, so the next run delivers them again (see the sink errors above; raise --shutdown-timeout to wait longer)",
        timeout.as_secs_f64()
    );
    ExitCode::from(EXIT_UNDELIVERED)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Library errors already name their cause in their
/// message, so a cause whose text is already there is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    kube_event_pipe::errors::error_chain(e.as_ref())
}

fn run(config: config::Config) -> anyhow::Result<pipeline::Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let reopen = Arc::new(AtomicBool::new(false));
        signals::install(shutdown.clone(), reopen.clone())
            .context("cannot install signal handlers")?;
        let health = Health::default();
        if let Some(addr) = config.listen {
            let recorder = telemetry::install_recorder()?;
            // A watch renews every `watch_timeout` and the API server sends bookmarks within
            // it, so two of them without any sign of life is a wedge, not a quiet cluster.
            let stall = match &config.source {
                SourceConfig::Kube(k) => Some((2 * k.watch_timeout).max(Duration::from_secs(600))),
                SourceConfig::Replay(_) => None,
            };
            // Its own token: the probes keep answering while the pipe drains on SIGTERM.
            telemetry::serve(
                addr,
                recorder,
                health.clone(),
                stall,
                CancellationToken::new(),
            )
            .await?;
        }
        Ok(ha::supervisor::run(&config, shutdown, reopen, health).await?)
    });
    // The pipe has delivered, committed and synced what it could (or reported why not); a
    // sink still stuck in a call that never returns (an unreachable broker's teardown, a hung
    // upload past the shutdown timeout) must not keep the process alive, as waiting for the
    // runtime's blocking tasks would.
    runtime.shutdown_background();
    result
}

fn inspect(args: &config::InspectArgs) -> anyhow::Result<()> {
    telemetry::init_logging("warn", LogFormat::Text);
    let rows = dedup::inspect(&args.persistence_path, SystemTime::now())?;
    let text = if args.json {
        dedup::render_json(&rows)
    } else {
        dedup::render_table(&rows)
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        // `inspect | head` is a normal way to read it.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// `decode`: one object, from a file, stdin or S3, printed as JSON lines.
fn decode(args: &config::DecodeArgs, connection: &config::S3Connection) -> anyhow::Result<()> {
    telemetry::init_logging("warn", LogFormat::Text);
    let (name, bytes) = match (&args.s3, args.input.as_deref()) {
        (Some(url), _) => {
            let (bucket, key) = url
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .with_context(|| format!("--s3 {url}: must be s3://BUCKET/KEY"))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let bytes = runtime.block_on(sink::s3::get_object(connection, bucket, key))?;
            (url.clone(), bytes)
        }
        (None, Some("-") | None) => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .context("cannot read stdin")?;
            ("stdin".to_string(), bytes)
        }
        (None, Some(path)) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
            (path.to_string(), bytes)
        }
    };
    let lines = object::decode(&name, &bytes)?;
    let mut out = std::io::stdout().lock();
    match out.write_all(&lines).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}
