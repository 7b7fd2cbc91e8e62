//! Writes a synthetic event stream as watch envelopes: `examples/sample-events.jsonl` is its
//! output with the defaults below, and the tests and benchmarks use the same generator.
//!
//! ```sh
//! cargo run --example gen_sample -- [ENVELOPES] [SEED] [PRETTY_EVERY] > events.jsonl
//! ```

use std::io::Write;

use kube_event_pipe::synth::{SynthConfig, generate};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |name: &str, default: u64| -> anyhow::Result<u64> {
        args.next().map_or(Ok(default), |v| {
            v.replace('_', "")
                .parse()
                .map_err(|e| anyhow::anyhow!("{name} must be a whole number, got {v:?}: {e}"))
        })
    };
    let envelopes = number("ENVELOPES", 400)?;
    let seed = number("SEED", 20261122)?;
    let pretty_every = number("PRETTY_EVERY", 150)?;
    let stream = generate(&SynthConfig {
        envelopes: usize::try_from(envelopes)?,
        seed,
        pretty_every: (pretty_every > 0).then_some(usize::try_from(pretty_every)?),
        ..SynthConfig::default()
    });
    let mut out = std::io::stdout().lock();
    out.write_all(stream.text.as_bytes())?;
    out.flush()?;
    eprintln!(
        "{} envelopes, {} distinct occurrences, {} duplicates, {} deletions",
        stream.envelopes,
        stream.occurrences.len(),
        stream.duplicates,
        stream.deletions
    );
    Ok(())
}
