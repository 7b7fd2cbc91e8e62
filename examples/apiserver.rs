//! The test API server on its own, holding synthetic events, for benchmarks and for trying the
//! pipe without a cluster:
//!
//! ```sh
//! cargo run --release --example apiserver -- --events 100000 --kubeconfig /tmp/kep-kubeconfig
//! cargo run --release -- --kubeconfig /tmp/kep-kubeconfig --persistence-path /tmp/kep-state
//! ```
//!
//! Prints one line (`kubeconfig PATH https URL http URL rv N events N`) once it serves, then
//! serves until killed.

#[path = "../tests/support/fake_api/mod.rs"]
mod fake_api;

use kube_event_pipe::synth::{SynthConfig, generate};

fn main() {
    let mut events = 10_000usize;
    let mut seed = 1u64;
    let mut kubeconfig: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--events" => {
                events = value()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| usage("--events takes a number"))
            }
            "--seed" => {
                seed = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--seed takes a number"))
            }
            "--kubeconfig" => kubeconfig = Some(value().into()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let server = fake_api::ApiServer::start();
    let stream = generate(&SynthConfig {
        envelopes: events,
        seed,
        ..SynthConfig::default()
    });
    let rv = server.add_envelopes(&stream.text);
    let path = match kubeconfig {
        Some(p) => {
            std::fs::copy(server.kubeconfig(), &p).unwrap_or_else(|e| {
                usage(&format!(
                    "cannot write the kubeconfig to {}: {e}",
                    p.display()
                ))
            });
            p
        }
        None => server.kubeconfig().to_path_buf(),
    };
    println!(
        "kubeconfig {} https {} http {} rv {rv} events {}",
        path.display(),
        server.https_url(),
        server.http_url(),
        server.events().len()
    );
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}\nusage: apiserver [--events N] [--seed S] [--kubeconfig PATH]");
    std::process::exit(2);
}
