//! One validated, typed configuration, built in one place from flags, environment and a file.
//!
//! Precedence: flag > environment > config file > default. Every rejected value is reported with
//! its name as the user wrote it, where it came from and what is accepted, because an operator
//! reading a CrashLoopBackOff log has only that line to go on.

pub mod cli;
pub mod defaults;
mod delivery;
mod file;
mod ha;
pub mod kafka;
mod layers;
mod parse;
mod redact;
mod types;
mod validate;

pub use cli::{Cli, Command, DecodeArgs, InspectArgs, RunArgs};

pub use crate::encode::object::ObjectFormat;
pub use delivery::{
    Compression, HeaderSpec, HeaderValueSource, OtlpBody, OtlpSettings, TlsFiles, WebhookFormat,
    WebhookSettings,
};
pub use kafka::KafkaSettings;
pub use layers::Origin;
pub use redact::{REDACTED, Redacted, redact};

pub use types::*;
pub use validate::{build, decode_connection};

#[cfg(test)]
mod tests;
