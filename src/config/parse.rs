//! Parsers for single option values. Each returns the requirement text on failure; the caller
//! adds the name, value and origin.

use std::time::Duration;

/// The value if it is one of `choices` (case-insensitive), as the canonical choice.
pub(crate) fn one_of(v: &str, choices: &[&'static str]) -> Result<&'static str, String> {
    choices
        .iter()
        .find(|c| c.eq_ignore_ascii_case(v))
        .copied()
        .ok_or_else(|| format!("must be one of {}", choices.join(", ")))
}

pub(crate) fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// A whole number in `min..=max`; underscores group digits as in the Python tool (`1_000_000`).
pub(crate) fn whole(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let requirement = || format!("must be a whole number from {min} to {max}");
    let digits: String = v.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('_') {
        return Err(requirement());
    }
    match digits.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(requirement()),
    }
}

/// A socket address to listen on (`0.0.0.0:9090`, `[::]:9090`, `127.0.0.1:0`), or `off`.
pub(crate) fn listen(v: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        "must be an IP address and port such as 0.0.0.0:9090 or [::]:9090, or off".to_string()
    })
}

/// A probability strictly between 0 and 1.
pub(crate) fn rate(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if r > 0.0 && r < 1.0 => Ok(r),
        _ => Err("must be a number in (0, 1), e.g. 0.000001".into()),
    }
}

/// Seconds, fractions allowed, in `min..=max`.
pub(crate) fn seconds(v: &str, min: f64, max: f64) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= min && s <= max => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("must be a number of seconds from {min} to {max}")),
    }
}

/// A comma-separated list of namespace names (DNS-1123 labels), each once.
pub(crate) fn namespaces(v: &str) -> Result<Vec<String>, String> {
    let requirement = "must be a comma-separated list of namespace names (lower-case letters, digits and -, at most 63 characters)";
    let mut out: Vec<String> = Vec::new();
    for part in v.split(',').map(str::trim) {
        let valid = !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !valid {
            return Err(format!("{part:?} is not a namespace name; {requirement}"));
        }
        if !out.iter().any(|n| n == part) {
            out.push(part.to_string());
        }
    }
    Ok(out)
}

/// A comma-separated list of sink names, each once.
pub(crate) fn sink_list(v: &str) -> Result<Vec<&'static str>, String> {
    let requirement =
        || "must be a comma-separated list of stdout, file, s3, kafka, otlp, http".to_string();
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim) {
        let name = one_of(part, &["stdout", "file", "s3", "kafka", "otlp", "http"])
            .map_err(|_| requirement())?;
        if out.contains(&name) {
            return Err(format!("names {name} twice; {}", requirement()));
        }
        out.push(name);
    }
    Ok(out)
}

/// A log level or tracing filter. The Python kube-event-pipe's level names (DEBUG, INFO,
/// WARNING, ERROR, CRITICAL) and tracing's (trace, debug, info, warn, error, off) are accepted
/// in any case, alone or as the level of a directive (`kube_event_pipe=debug,kube=warn`).
///
/// Every directive must name a level: tracing would take a bare word such as `INF0` as a
/// target (log only what that module logs) and so silence every line, WARN and ERROR included.
pub(crate) fn log_filter(v: &str) -> Result<String, String> {
    let requirement = || {
        "must be DEBUG, INFO, WARNING, ERROR or CRITICAL, or tracing directives with a level such as kube_event_pipe=debug,kube=warn".to_string()
    };
    let mut directives = Vec::new();
    for directive in v.split(',').map(str::trim) {
        if directive.is_empty() {
            return Err(requirement());
        }
        let mapped = match directive.rsplit_once('=') {
            None => level_name(directive).ok_or_else(requirement)?.to_string(),
            Some((target, level)) if !target.trim().is_empty() => {
                format!("{target}={}", level_name(level).ok_or_else(requirement)?)
            }
            Some(_) => return Err(requirement()),
        };
        directives.push(mapped);
    }
    let mapped = directives.join(",");
    tracing_subscriber::EnvFilter::builder()
        .parse(&mapped)
        .map(|_| mapped)
        .map_err(|_| requirement())
}

/// A level as tracing spells it, from a Python or tracing level name in any case.
fn level_name(v: &str) -> Option<&'static str> {
    Some(match v.trim().to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" | "WARNING" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        "OFF" => "off",
        _ => return None,
    })
}

/// A stream id used in object keys: it must be one safe path segment.
/// Comma-separated globs (`*`, `?`, `[…]`), each checked; an empty value means none.
pub(crate) fn globs(v: &str) -> Result<Vec<String>, String> {
    let globs: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    for g in &globs {
        globset::Glob::new(g)
            .map_err(|e| format!("{g:?} is not a glob ({e}); use e.g. app.kubernetes.io/*"))?;
    }
    Ok(globs)
}

/// A file or directory path: anything but empty.
pub(crate) fn path(v: &str) -> Result<std::path::PathBuf, String> {
    if v.is_empty() {
        Err("must be a file or directory path".into())
    } else {
        Ok(std::path::PathBuf::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_accept_python_style_underscores() {
        assert_eq!(whole("1_000_000", 1, u64::MAX), Ok(1_000_000));
        assert_eq!(whole("42", 1, 100), Ok(42));
        for bad in [
            "",
            "_1",
            "-1",
            "1.5",
            "abc",
            "0",
            "101",
            "99999999999999999999999",
        ] {
            assert_eq!(
                whole(bad, 1, 100),
                Err("must be a whole number from 1 to 100".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn rates_are_open_interval() {
        assert_eq!(rate("0.01"), Ok(0.01));
        assert_eq!(rate("1e-6"), Ok(1e-6));
        for bad in ["0", "1", "1.5", "-0.1", "NaN", "inf", "x"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_allow_fractions_within_bounds() {
        assert_eq!(seconds("0.25", 0.001, 10.0), Ok(Duration::from_millis(250)));
        assert!(seconds("0", 0.001, 10.0).is_err());
        assert!(seconds("inf", 0.0, 10.0).is_err());
    }

    #[test]
    fn python_log_levels_are_translated() {
        assert_eq!(log_filter("WARNING").unwrap(), "warn");
        assert_eq!(log_filter("CRITICAL").unwrap(), "error");
        assert_eq!(log_filter("info").unwrap(), "info");
        assert_eq!(log_filter("Warning").unwrap(), "warn");
        assert_eq!(
            log_filter("kube_event_pipe=debug").unwrap(),
            "kube_event_pipe=debug"
        );
        assert_eq!(
            log_filter("kube_event_pipe=DEBUG, kube=WARNING").unwrap(),
            "kube_event_pipe=debug,kube=warn"
        );
        assert_eq!(log_filter("info,kube=off").unwrap(), "info,kube=off");
        assert!(log_filter("loud=[").is_err());
    }

    #[test]
    fn a_log_level_that_names_no_level_is_refused() {
        // tracing reads each of these as a target filter, which silences every other line.
        for typo in [
            "INF0",
            "WARNNG",
            "kube_event_pipe",
            "info,",
            "=debug",
            "kube=verbose",
            "",
        ] {
            assert_eq!(
                log_filter(typo),
                Err("must be DEBUG, INFO, WARNING, ERROR or CRITICAL, or tracing directives with a level such as kube_event_pipe=debug,kube=warn".to_string()),
                "{typo:?}"
            );
        }
    }

    #[test]
    fn sink_lists_are_checked() {
        assert_eq!(sink_list("file, stdout"), Ok(vec!["file", "stdout"]));
        assert!(
            sink_list("file,file")
                .unwrap_err()
                .starts_with("names file twice")
        );
        assert!(sink_list("kafka").is_ok());
        assert!(sink_list("kafak").is_err());
    }
}
