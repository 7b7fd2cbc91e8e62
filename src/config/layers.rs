//! The layers a value comes from (flag, environment, config file), and where it came from, so
//! that a rejected value is reported under the name the user wrote.

use std::fmt;
use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::ConfigError;
use super::file::FileLayer;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Environment,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Environment => f.write_str("environment"),
            Origin::File(p) => write!(f, "config file {}", p.display()),
        }
    }
}

/// Looks up one option through the layers, remembering where its value came from.
pub(super) struct Layers<'a> {
    pub(super) matches: &'a ArgMatches,
    pub(super) command: clap::Command,
    pub(super) file: Option<FileLayer>,
}

/// A value as the user gave it, with enough context to reject it properly.
pub(crate) struct Raw {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) origin: Origin,
}

/// How a settings function looks an option up: its clap id, then the config file's keys for
/// it (ours first, then k8stream's).
pub(crate) type Get<'a> = dyn Fn(&str, &[&str]) -> Option<Raw> + 'a;

impl Raw {
    pub(crate) fn invalid(&self, requirement: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            name: self.name.clone(),
            value: self.value.clone(),
            origin: self.origin.clone(),
            requirement: requirement.into(),
        }
    }

    /// Runs a parser from `parse`, turning its requirement text into a full error.
    pub(crate) fn parse<T>(
        &self,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        f(self.value.trim()).map_err(|req| self.invalid(req))
    }
}

impl Layers<'_> {
    /// `id` is the clap argument id (the field name in `RunArgs`); `file_keys` are the names a
    /// config file may use for it, ours first, then k8stream's.
    pub(super) fn get(&self, id: &str, file_keys: &[&str]) -> Option<Raw> {
        // Ids that are file-only (k8stream's `file_sink_dir`) have no clap argument. Repeated
        // flags (`--namespace a --namespace b`) are joined for the comma parsers.
        let given = self
            .matches
            .try_get_many::<String>(id)
            .ok()
            .flatten()
            .map(|values| values.cloned().collect::<Vec<_>>().join(","));
        if let Some(value) = given {
            let arg = self.command.get_arguments().find(|a| a.get_id() == id);
            let (name, origin) = match self.matches.value_source(id) {
                Some(ValueSource::EnvVariable) => (
                    arg.and_then(|a| a.get_env())
                        .map(|e| e.to_string_lossy().into_owned()),
                    Origin::Environment,
                ),
                _ => (
                    arg.and_then(|a| a.get_long()).map(|l| format!("--{l}")),
                    Origin::Flag,
                ),
            };
            return Some(Raw {
                name: name.unwrap_or_else(|| id.to_string()),
                value,
                origin,
            });
        }
        let file = self.file.as_ref()?;
        file_keys.iter().find_map(|key| {
            file.get(key).map(|value| Raw {
                name: key.to_string(),
                value,
                origin: Origin::File(file.path.clone()),
            })
        })
    }
}
