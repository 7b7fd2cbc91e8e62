//! The leader election settings (`--leader-elect` and the Lease's timing), checked against each
//! other: a renew deadline at or past the lease duration would let a leader that lost its Lease
//! keep emitting after a standby took over.

use std::path::Path;
use std::time::Duration;

use super::layers::Raw;
use super::{ConfigError, HaConfig, SourceConfig, defaults, parse};

/// The Lease replicas agree through and its timing, as configured; `crate::ha` builds its
/// elector from it. The defaults are client-go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name (default `kube-event-pipe`).
    pub name: String,
    /// Its namespace (default: the pod's own, from the service account's namespace file).
    pub namespace: String,
    /// This replica's identity (default: `POD_NAME`, else the hostname).
    pub identity: String,
    /// How long a Lease nobody renews stays held (default 15 s): the longest a standby waits
    /// after a leader dies without releasing.
    pub lease_duration: Duration,
    /// How long the leader keeps emitting without a successful renewal (default 10 s); below
    /// `lease_duration`, the margin is what covers clock-rate skew.
    pub renew_deadline: Duration,
    /// Between renewals and between a standby's attempts (default 2 s).
    pub retry_period: Duration,
}

/// Where a pod finds its own namespace.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

pub(super) fn settings(
    get: &impl Fn(&str, &[&str]) -> Option<Raw>,
    source: &SourceConfig,
) -> Result<Option<HaConfig>, ConfigError> {
    let on = match get("leader_elect", &["leader_elect"]) {
        Some(raw) => raw.parse(parse::boolean)?,
        None => false,
    };
    if !on {
        return Ok(None);
    }
    if !matches!(source, SourceConfig::Kube(_)) {
        return Err(ConfigError::Conflict(
            "--leader-elect elects a leader among replicas watching a cluster, so it needs --source kube".into(),
        ));
    }
    let lease_name = match get("lease_name", &["lease_name"]) {
        Some(raw) => object_name(raw)?,
        None => defaults::LEASE_NAME.to_string(),
    };
    let namespace = match get("lease_namespace", &["lease_namespace"]) {
        Some(raw) => object_name(raw)?,
        None => own_namespace(Path::new(POD_NAMESPACE_FILE)).ok_or_else(|| {
            ConfigError::Conflict(format!(
                "--leader-elect needs the Lease's namespace: pass --lease-namespace (or KUBE_EVENT_PIPE_LEASE_NAMESPACE); in a pod it is read from {POD_NAMESPACE_FILE}"
            ))
        })?,
    };
    let (lease_duration, renew_deadline, retry_period) = timing(get)?;
    let identity = identity(get)?;
    let standby_max_bytes = match get("standby_max_bytes", &["standby_max_bytes"]) {
        Some(raw) => raw.parse(|v| parse::whole(v, 1 << 20, 1 << 40))? as usize,
        None => defaults::STANDBY_MAX_BYTES,
    };
    Ok(Some(HaConfig {
        lease: LeaseSettings {
            name: lease_name,
            namespace,
            identity,
            lease_duration,
            renew_deadline,
            retry_period,
        },
        standby_max_bytes,
    }))
}

/// A DNS subdomain, as every object name.
fn object_name(raw: Raw) -> Result<String, ConfigError> {
    let v = raw.value.trim();
    let valid = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(v.to_string())
    } else {
        Err(raw.invalid("must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))
    }
}

/// The Lease's timing, checked against itself.
fn timing(
    get: &impl Fn(&str, &[&str]) -> Option<Raw>,
) -> Result<(Duration, Duration, Duration), ConfigError> {
    let seconds = |id: &str, default: Duration| -> Result<Duration, ConfigError> {
        match get(id, &[id]) {
            Some(raw) => raw.parse(|v| parse::seconds(v, 0.1, 3600.0)),
            None => Ok(default),
        }
    };
    let lease_duration = seconds("lease_duration", defaults::LEASE_DURATION)?;
    let renew_deadline = seconds("renew_deadline", defaults::RENEW_DEADLINE)?;
    let retry_period = seconds("retry_period", defaults::RETRY_PERIOD)?;
    if renew_deadline >= lease_duration {
        return Err(ConfigError::Conflict(format!(
            "--renew-deadline ({} s) must be shorter than --lease-duration ({} s): a leader must stop emitting before a standby may take its Lease",
            renew_deadline.as_secs_f64(),
            lease_duration.as_secs_f64()
        )));
    }
    // client-go's rule: a renewal attempt (retry period plus its jitter) fits in the deadline.
    if retry_period.mul_f64(1.2) >= renew_deadline {
        return Err(ConfigError::Conflict(format!(
            "--retry-period ({} s) must be under --renew-deadline ({} s) / 1.2, so that a leader gets more than one chance to renew",
            retry_period.as_secs_f64(),
            renew_deadline.as_secs_f64()
        )));
    }
    Ok((lease_duration, renew_deadline, retry_period))
}

/// This replica's name in the Lease: given, or the pod's own.
fn identity(get: &impl Fn(&str, &[&str]) -> Option<Raw>) -> Result<String, ConfigError> {
    match get("identity", &["identity"]) {
        Some(raw) => {
            let v = raw.value.trim();
            if v.is_empty() || v.len() > 253 || v.chars().any(char::is_control) {
                return Err(raw.invalid("must be a non-empty name of at most 253 characters"));
            }
            Ok(v.to_string())
        }
        None => default_identity().ok_or_else(|| {
            ConfigError::Conflict(
                "--leader-elect needs this replica's identity: set POD_NAME (the downward API's metadata.name) or pass --identity".into(),
            )
        }),
    }
}

fn own_namespace(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns = text.trim();
    (!ns.is_empty()).then(|| ns.to_string())
}

/// `POD_NAME`, as the downward API sets it, else the hostname (a pod's is its name too).
fn default_identity() -> Option<String> {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.trim().is_empty()
    {
        return Some(name.trim().to_string());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let host = host.trim();
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_namespace_file_is_trimmed_and_an_empty_one_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("namespace");
        std::fs::write(&path, "events\n").unwrap();
        assert_eq!(own_namespace(&path).as_deref(), Some("events"));
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(own_namespace(&path), None);
        assert_eq!(own_namespace(&dir.path().join("missing")), None);
    }
}
