//! One validated, typed configuration, built in one place from flags, environment and a file.
//!
//! Precedence: flag > environment > config file > default. Every rejected value is reported with
//! its name as the user wrote it, where it came from and what is accepted, because an operator
//! reading a CrashLoopBackOff log has only that line to go on.
//!
//! Each sink's settings, defaults and validation live in its folder (`sink/<name>/config.rs`);
//! this module looks the options up through the layers, hands them to each sink's settings
//! function and assembles the [`Config`].

pub mod cli;
pub mod defaults;
mod file;
mod ha;
mod layers;
pub(crate) mod parse;
mod redact;
mod sinks;
mod types;
mod validate;

pub use cli::{Cli, Command, DecodeArgs, InspectArgs, RunArgs};

pub use crate::encode::object::ObjectFormat;
pub use crate::sink::kafka::config as kafka;
pub use crate::sink::kafka::config::KafkaSettings;
pub use crate::sink::otlp::config::{OtlpBody, OtlpSettings};
pub use crate::sink::s3::config::{S3Connection, S3Options, S3Settings, Sse, decode_connection};
pub use crate::sink::transport::config::{Compression, HeaderSpec, HeaderValueSource, TlsFiles};
pub use crate::sink::webhook::config::{WebhookFormat, WebhookSettings};
pub use layers::Origin;
pub(crate) use layers::{Get, Raw};
pub use redact::{REDACTED, Redacted, redact};

pub use types::*;
pub use validate::build;

#[cfg(test)]
mod tests;
