//! The binary watching the test API server, writing to a file and logging to a file.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::fake_api::ApiServer;
use super::{BIN, count_lines, file_lines, signal, wait_exit, wait_for};

/// The binary watching the test server, writing to a file, logging to a file.
pub struct Pipe {
    pub child: Child,
    pub out: PathBuf,
    pub log: PathBuf,
}

impl Pipe {
    pub fn start(server: &ApiServer, state: &Path, extra: &[&str]) -> Pipe {
        Self::start_with(server.kubeconfig(), state, extra)
    }

    pub fn start_with(kubeconfig: &Path, state: &Path, extra: &[&str]) -> Pipe {
        let out = state.join("events.jsonl");
        let runs = std::fs::read_dir(state).map_or(0, |d| d.count());
        let log = state.join(format!("run-{runs}.log"));
        let child = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--persistence-path")
            .arg(state.join("filters"))
            .arg("--destination")
            .arg(&out)
            .args(["--log-level", "INFO", "--batch-interval", "0.05"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start the binary");
        Pipe { child, out, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str) {
        wait_for(&format!("{needle:?} in the log"), || {
            self.log().contains(needle).then_some(())
        });
    }

    pub fn wait_ready(&self) {
        self.wait_log("initial list delivered; ready");
    }

    pub fn wait_lines(&self, n: usize) {
        wait_for(&format!("{n} lines"), || {
            (count_lines(&self.out) >= n).then_some(())
        });
    }

    /// SIGTERM, which must end it with status 0; then the output lines and the whole log.
    pub fn stop(mut self) -> (Vec<String>, String) {
        signal(&self.child, libc::SIGTERM);
        let status = wait_exit(&mut self.child);
        let log = self.log();
        assert!(status.success(), "{status:?}\n{log}");
        (file_lines(&self.out), log)
    }
}
