//! The documentation agrees with the binary: the configuration reference names exactly the
//! flags and environment variables `--help` prints, and the operations guide lists every metric.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kube-event-pipe");

fn doc(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("docs/{name}: {e}"))
}

/// Flags and environment variables as `--help` prints them (wrapped lines rejoined).
fn from_help(args: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let flags = text
        .lines()
        .filter_map(|l| {
            let l = l
                .trim_start()
                .trim_start_matches("-h, ")
                .trim_start_matches("-V, ");
            let flag = l.strip_prefix("--")?.split([' ', '=']).next()?;
            Some(format!("--{flag}"))
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let envs = joined
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_string)
        .collect();
    (flags, envs)
}

/// Flags and environment variables in the first two columns of the tables under `heading`,
/// up to the next `## ` heading.
fn from_reference(text: &str, heading: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading}"));
    let (mut flags, mut envs) = (BTreeSet::new(), BTreeSet::new());
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        flags.insert(cells[1].trim_matches('`').to_string());
        let env = cells[2].trim_matches('`');
        if env != "–" && env != "-" {
            envs.insert(env.to_string());
        }
    }
    (flags, envs)
}

fn assert_same(what: &str, help: &BTreeSet<String>, reference: &BTreeSet<String>) {
    let undocumented: Vec<_> = help.difference(reference).collect();
    let stale: Vec<_> = reference.difference(help).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "{what}: in --help but not in docs/configuration.md: {undocumented:?}; \
         in docs/configuration.md but not in --help: {stale:?}"
    );
}

#[test]
fn the_configuration_reference_and_help_name_the_same_flags_and_variables() {
    let reference = doc("configuration.md");
    let (flags, envs) = from_help(&["--help"]);
    assert!(flags.contains("--listen") && envs.contains("KUBE_EVENT_PIPE_LISTEN"));
    let (doc_flags, doc_envs) = from_reference(&reference, "Main job");
    assert_same("main job flags", &flags, &doc_flags);
    assert_same("main job environment", &envs, &doc_envs);

    let (flags, envs) = from_help(&["inspect", "--help"]);
    let (doc_flags, doc_envs) = from_reference(&reference, "`inspect`");
    assert_same("inspect flags", &flags, &doc_flags);
    assert_same("inspect environment", &envs, &doc_envs);
}

#[test]
fn the_operations_guide_lists_every_metric() {
    let guide = doc("operations.md");
    for (name, _, _) in kube_event_pipe::metrics::ALL {
        assert!(
            guide.contains(&format!("| `{name}` |")),
            "docs/operations.md has no row for {name}"
        );
    }
}

#[test]
fn the_readme_links_every_doc() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for name in [
        "architecture.md",
        "configuration.md",
        "operations.md",
        "migrating.md",
    ] {
        assert!(
            readme.contains(&format!("docs/{name}")),
            "README.md does not link docs/{name}"
        );
    }
}

/// Every default the code defines is the one the configuration reference shows: a default is
/// changed in `config/defaults.rs`, and this holds the reference to it.
#[test]
fn the_reference_shows_the_defaults_the_code_uses() {
    let text = doc("configuration.md");
    let mut checked = 0;
    for (flag, shown) in kube_event_pipe::config::defaults::documented() {
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("| `{flag}` |")))
            .collect();
        assert!(
            !rows.is_empty(),
            "docs/configuration.md has no row for {flag}"
        );
        for row in rows {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(
                cells[4], shown,
                "default of {flag} in docs/configuration.md"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}
