//! The Helm chart as a cluster would receive it: every example values file rendered offline by
//! the real Helm library (helm-python-sdk, through `deploy/helm/render.py`), checked for the
//! restricted Pod Security Standard and least-privilege RBAC, and compared with the kustomize
//! base it must match by default and with the kustomize `ha` overlay in HA mode.
//!
//! The renderer is the Python interpreter in `KUBE_EVENT_PIPE_HELM_PYTHON` (`.ci/run` installs
//! helm-python-sdk into a venv and sets it), else `python3`. Without helm-python-sdk the tests
//! print why and pass, except under CI (`CI` set), where a missing renderer fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/kube-event-pipe")
}

/// The Python that has helm-python-sdk, or None (after saying why) when a local run lacks it.
fn helm_python() -> Option<String> {
    let python = std::env::var("KUBE_EVENT_PIPE_HELM_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(python);
    }
    let why = format!(
        "{python} cannot import helm_python: pip install helm-python-sdk, or set \
         KUBE_EVENT_PIPE_HELM_PYTHON to a Python that has it (.ci/run does)"
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// Runs `deploy/helm/render.py` on the chart with extra arguments.
fn run_render(python: &str, args: &[&str]) -> Output {
    Command::new(python)
        .arg(repo().join("deploy/helm/render.py"))
        .arg(chart())
        .args(args)
        .output()
        .expect("run deploy/helm/render.py")
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The rendered objects for the given render.py arguments; panics with Helm's message on error.
fn render(python: &str, args: &[&str]) -> Vec<Value> {
    let out = run_render(python, args);
    assert!(
        out.status.success(),
        "render {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_documents(&String::from_utf8(out.stdout).expect("UTF-8 YAML"))
}

/// The kustomize base, rendered by the real `kubectl kustomize` (as tests/deploy.rs does).
fn kustomize_base() -> Vec<Value> {
    kustomize("base")
}

/// A kustomize directory under deploy/kustomize, rendered by `kubectl kustomize`.
fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/kustomize").join(dir))
        .output()
        .expect("run kubectl (CI installs it; see .ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_documents(&String::from_utf8(out.stdout).expect("UTF-8 YAML"))
}

fn example_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("the chart's ci/ directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "example values files: {files:?}");
    files
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn all_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The Deployment, or the StatefulSet in HA mode.
fn workload(objects: &[Value]) -> &Value {
    let mut found = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet");
    let w = found.next().expect("a Deployment or StatefulSet");
    assert!(found.next().is_none(), "one workload");
    w
}

/// The restricted Pod Security Standard, field by field, for the pod and every container.
fn assert_restricted(case: &str, workload: &Value) {
    let pod = &workload["spec"]["template"]["spec"];
    let pod_sc = &pod["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true, "{case}");
    assert!(
        pod_sc["runAsUser"].as_u64().is_some_and(|u| u >= 10_000),
        "{case}: high non-root UID"
    );
    assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault", "{case}");
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[key].is_null() || pod[key] == false, "{case}: {key}");
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        assert!(volume["hostPath"].is_null(), "{case}: hostPath volume");
    }
    let containers = pod["containers"].as_array().expect("containers");
    assert!(!containers.is_empty());
    for c in containers {
        let name = &c["name"];
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{case} {name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{case} {name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{case} {name}");
        assert!(sc["capabilities"]["add"].is_null(), "{case} {name}");
        assert!(sc["privileged"].is_null() || sc["privileged"] == false);
        assert_ne!(sc["runAsNonRoot"], false, "{case} {name}");
        assert_ne!(sc["runAsUser"], 0, "{case} {name}");
        for kind in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][res].is_string(),
                    "{case} {name}: resources.{kind}.{res}"
                );
            }
        }
        assert!(c["livenessProbe"].is_object(), "{case} {name}: liveness");
        assert!(c["readinessProbe"].is_object(), "{case} {name}: readiness");
    }
}

/// One grant: (apiGroup, resource, verbs, resourceNames), the names empty when the rule has none.
type Rule = (String, String, Vec<String>, Vec<String>);

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// Every rule of a role, flattened per group and resource and sorted.
fn rules(role: &Value) -> Vec<Rule> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let verbs = strings(&rule["verbs"]);
        let names = strings(&rule["resourceNames"]);
        assert!(!verbs.is_empty(), "verbs");
        for group in strings(&rule["apiGroups"]) {
            for res in strings(&rule["resources"]) {
                out.push((group.clone(), res, verbs.clone(), names.clone()));
            }
        }
    }
    out.sort();
    out
}

/// (apiGroup, resource, verbs, resourceNames) entries as rules, sorted.
fn rule_set(entries: &[(&str, &str, &[&str], &[&str])]) -> Vec<Rule> {
    let owned = |l: &[&str]| l.iter().map(|v| v.to_string()).collect();
    let mut out: Vec<Rule> = entries
        .iter()
        .map(|(g, r, verbs, names)| (g.to_string(), r.to_string(), owned(verbs), owned(names)))
        .collect();
    out.sort();
    out
}

const EVENTS: &[(&str, &str, &[&str], &[&str])] = &[("", "events", &["list", "watch"], &[])];
const ENRICHMENT: &[(&str, &str, &[&str], &[&str])] = &[
    ("", "pods", &["get"], &[]),
    ("", "nodes", &["get"], &[]),
    ("", "services", &["get"], &[]),
    ("", "persistentvolumeclaims", &["get"], &[]),
    ("apps", "deployments", &["get"], &[]),
    ("apps", "replicasets", &["get"], &[]),
    ("apps", "statefulsets", &["get"], &[]),
    ("apps", "daemonsets", &["get"], &[]),
    ("batch", "jobs", &["get"], &[]),
    ("batch", "cronjobs", &["get"], &[]),
];

/// The Lease role: get and update of the one Lease, create of leases (RBAC cannot name an
/// object that does not exist yet).
fn lease_rules(lease: &str) -> Vec<Rule> {
    rule_set(&[
        (
            "coordination.k8s.io",
            "leases",
            &["get", "update"],
            &[lease],
        ),
        ("coordination.k8s.io", "leases", &["create"], &[]),
    ])
}

/// The values one example file sets, for the expectations that depend on them.
fn values_of(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read values");
    serde_yaml_ng::from_str(&text).expect("values parse")
}

/// Every role is bound to the pipe's ServiceAccount and holds exactly the rules its feature
/// needs: events (cluster-wide, or per namespace when namespaces are listed), `get` for
/// enrichment, leases in HA mode.
fn assert_rbac(case: &str, objects: &[Value], values: &Value) {
    let enrich = values["enrichment"]["enabled"] == true;
    let ha = values["ha"]["enabled"] == true;
    let namespaces: Vec<&str> = values["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();

    let mut cluster_roles: Vec<(String, Vec<Rule>)> = all_of(objects, "ClusterRole")
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"].as_str().unwrap().to_string(),
                rules(r),
            )
        })
        .collect();
    cluster_roles.sort();
    let mut expected_cluster = Vec::new();
    if namespaces.is_empty() {
        expected_cluster.push(("kube-event-pipe".to_string(), rule_set(EVENTS)));
    }
    if enrich {
        expected_cluster.push((
            "kube-event-pipe-enrichment".to_string(),
            rule_set(ENRICHMENT),
        ));
    }
    expected_cluster.sort();
    assert_eq!(cluster_roles, expected_cluster, "{case}: ClusterRoles");

    let mut roles: Vec<(String, String, Vec<Rule>)> = all_of(objects, "Role")
        .iter()
        .map(|r| {
            (
                r["metadata"]["namespace"].as_str().unwrap().to_string(),
                r["metadata"]["name"].as_str().unwrap().to_string(),
                rules(r),
            )
        })
        .collect();
    roles.sort();
    let namespace = workload(objects)["metadata"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_string();
    let mut expected_roles: Vec<(String, String, Vec<Rule>)> = namespaces
        .iter()
        .map(|ns| {
            (
                ns.to_string(),
                "kube-event-pipe".to_string(),
                rule_set(EVENTS),
            )
        })
        .collect();
    if ha {
        let lease = values["ha"]["leaseName"]
            .as_str()
            .filter(|l| !l.is_empty())
            .unwrap_or("kube-event-pipe");
        expected_roles.push((
            namespace.clone(),
            "kube-event-pipe-leader".into(),
            lease_rules(lease),
        ));
    }
    expected_roles.sort();
    assert_eq!(roles, expected_roles, "{case}: Roles");

    let account = workload(objects)["spec"]["template"]["spec"]["serviceAccountName"].clone();
    find(
        objects,
        "ServiceAccount",
        account.as_str().expect("serviceAccountName"),
    );
    for (binding_kind, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let bindings = all_of(objects, binding_kind);
        assert_eq!(
            bindings.len(),
            all_of(objects, role_kind).len(),
            "{case}: {binding_kind}s"
        );
        for b in bindings {
            assert_eq!(b["roleRef"]["kind"], role_kind, "{case}");
            let role = objects
                .iter()
                .find(|o| {
                    o["kind"] == role_kind
                        && o["metadata"]["name"] == b["roleRef"]["name"]
                        && o["metadata"]["namespace"] == b["metadata"]["namespace"]
                })
                .unwrap_or_else(|| panic!("{case}: {binding_kind} to a missing role"));
            assert!(role.is_object());
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}]),
                "{case}"
            );
        }
    }
}

#[test]
fn every_example_values_file_renders_a_restricted_pod_and_only_the_rbac_its_features_need() {
    let Some(python) = helm_python() else { return };
    for file in example_values() {
        let case = file.file_name().unwrap().to_string_lossy().into_owned();
        let values = values_of(&file);
        let objects = render(&python, &["--values", file.to_str().unwrap()]);
        let w = workload(&objects);
        assert_restricted(&case, w);
        assert_rbac(&case, &objects, &values);
        // Every namespaced object lands in the pipe's namespace, except the per-namespace Roles.
        let namespace = w["metadata"]["namespace"].clone();
        for o in &objects {
            let kind = o["kind"].as_str().unwrap();
            if [
                "Namespace",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&kind)
            {
                continue;
            }
            assert_eq!(o["metadata"]["namespace"], namespace, "{case}: {kind}");
        }
        // Every claim the pod mounts is rendered (or templated, in HA mode).
        let pod = &w["spec"]["template"]["spec"];
        for v in pod["volumes"].as_array().into_iter().flatten() {
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                find(&objects, "PersistentVolumeClaim", claim);
            }
        }
        assert!(!all_of(&objects, "NetworkPolicy").is_empty(), "{case}");
    }
}

#[test]
fn the_default_render_holds_the_kustomize_base_kinds_rules_pod_security_and_settings() {
    let Some(python) = helm_python() else { return };
    let base = kustomize_base();
    let chart = render(&python, &[]);

    // The chart leaves the Namespace to `helm install --create-namespace` unless
    // namespace.create is set (a chart that always made it would collide with that flag).
    let kinds = |objects: &[Value], skip_namespace: bool| {
        let mut k: Vec<String> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .filter(|k| !(skip_namespace && k == "Namespace"))
            .collect();
        k.sort();
        k
    };
    assert_eq!(kinds(&chart, false), kinds(&base, true));
    let with_namespace = render(&python, &["--set-json", "namespace={\"create\":true}"]);
    assert_eq!(kinds(&with_namespace, false), kinds(&base, false));
    assert_eq!(
        find(&with_namespace, "Namespace", "kube-event-pipe")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        find(&base, "Namespace", "kube-event-pipe")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    );

    assert_eq!(
        rules(find(&chart, "ClusterRole", "kube-event-pipe")),
        rules(find(&base, "ClusterRole", "kube-event-pipe")),
        "ClusterRole rules"
    );
    for field in ["roleRef", "subjects"] {
        assert_eq!(
            find(&chart, "ClusterRoleBinding", "kube-event-pipe")[field],
            find(&base, "ClusterRoleBinding", "kube-event-pipe")[field],
            "ClusterRoleBinding {field}"
        );
    }

    let (a, b) = (
        find(&chart, "Deployment", "kube-event-pipe"),
        find(&base, "Deployment", "kube-event-pipe"),
    );
    for field in ["replicas", "strategy"] {
        assert_eq!(a["spec"][field], b["spec"][field], "{field}");
    }
    let (pa, pb) = (
        &a["spec"]["template"]["spec"],
        &b["spec"]["template"]["spec"],
    );
    for field in [
        "securityContext",
        "terminationGracePeriodSeconds",
        "serviceAccountName",
    ] {
        assert_eq!(pa[field], pb[field], "pod {field}");
    }
    let (ca, cb) = (&pa["containers"][0], &pb["containers"][0]);
    for field in [
        "name",
        "image",
        "imagePullPolicy",
        "securityContext",
        "resources",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "volumeMounts",
        "envFrom",
    ] {
        assert_eq!(ca[field], cb[field], "container {field}");
    }
    assert_eq!(pa["volumes"], pb["volumes"]);
    for (kind, name) in [
        ("ConfigMap", "kube-event-pipe"),
        ("PersistentVolumeClaim", "kube-event-pipe-filters"),
    ] {
        let field = if kind == "ConfigMap" { "data" } else { "spec" };
        assert_eq!(
            find(&chart, kind, name)[field],
            find(&base, kind, name)[field],
            "{kind} {name}"
        );
    }
    let (na, nb) = (
        find(&chart, "NetworkPolicy", "kube-event-pipe"),
        find(&base, "NetworkPolicy", "kube-event-pipe"),
    );
    for field in ["policyTypes", "ingress", "egress"] {
        assert_eq!(
            na["spec"][field], nb["spec"][field],
            "NetworkPolicy {field}"
        );
    }
}

#[test]
fn a_typo_in_the_values_fails_and_names_the_key() {
    let Some(python) = helm_python() else { return };
    for (set, key) in [
        ("sinks={\"stdot\":{\"enabled\":true}}", "stdot"),
        ("image={\"tagg\":\"1.0\"}", "tagg"),
        ("filter={\"errorRate\":1.5}", "errorRate"),
        ("sinks={\"s3\":{\"format\":\"parquet\"}}", "format"),
    ] {
        let out = run_render(&python, &["--set-json", set]);
        assert!(!out.status.success(), "{set} rendered");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{set}: {stderr}");
        assert!(out.stdout.is_empty(), "{set}: nothing rendered");
    }
    // A sink switched on without its required setting fails with the value to set.
    let out = run_render(
        &python,
        &["--set-json", "sinks={\"kafka\":{\"enabled\":true}}"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sinks.kafka.brokers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The filters' claim as the chart computes it: (generations + 1) files, doubled, in GiB.
fn expected_claim(capacity: u64, rate: f64, generations: u64) -> String {
    let (bits, _) = kube_event_pipe::dedup::filter::size_for(capacity, rate);
    let file = kube_event_pipe::dedup::header::HEADER_LEN as f64 + bits as f64 / 8.0;
    let total = file * (generations + 1) as f64 * 2.0;
    format!(
        "{}Gi",
        ((total / f64::from(1u32 << 30)).ceil() as u64).max(1)
    )
}

#[test]
fn the_filter_claim_follows_capacity_error_rate_and_generations_unless_set() {
    let Some(python) = helm_python() else { return };
    for (capacity, rate, generations) in [
        (1_000_000u64, 1e-6, 3u64),
        (100_000_000, 1e-6, 3),
        (300_000_000, 1e-9, 5),
        (50_000_000, 1e-2, 10),
    ] {
        let set = format!(
            "filter={{\"capacity\":{capacity},\"errorRate\":{rate:e},\"generations\":{generations}}}"
        );
        let objects = render(&python, &["--set-json", &set]);
        let claim = find(&objects, "PersistentVolumeClaim", "kube-event-pipe-filters");
        assert_eq!(
            claim["spec"]["resources"]["requests"]["storage"],
            expected_claim(capacity, rate, generations),
            "{set}"
        );
        let data = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
        if capacity != 1_000_000 {
            assert_eq!(
                data["KUBE_EVENT_PIPE_FILTER_CAPACITY"],
                capacity.to_string()
            );
        }
        if rate != 1e-6 {
            let written: f64 = data["KUBE_EVENT_PIPE_FILTER_ERROR_RATE"]
                .as_str()
                .expect("error rate set")
                .parse()
                .expect("a number the pipe parses");
            assert_eq!(written, rate);
        }
        if generations != 3 {
            assert_eq!(data["KUBE_EVENT_PIPE_BATCH_COUNT"], generations.to_string());
        }
    }
    // Large enough to need more than the 1 GiB floor, so the formula is really exercised.
    assert_ne!(expected_claim(300_000_000, 1e-9, 5), "1Gi");
    let objects = render(&python, &["--set-json", "persistence={\"size\":\"5Gi\"}"]);
    let claim = find(&objects, "PersistentVolumeClaim", "kube-event-pipe-filters");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
}

#[test]
fn sinks_enrichment_and_selectors_reach_the_pipe_as_its_environment() {
    let Some(python) = helm_python() else { return };
    let everything = chart().join("ci/everything-values.yaml");
    let objects = render(&python, &["--values", everything.to_str().unwrap()]);
    let data = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    assert_eq!(
        data["KUBE_EVENT_PIPE_SINK"],
        "stdout,file,s3,kafka,otlp,http"
    );
    assert_eq!(
        data["KUBE_EVENT_PIPE_DESTINATION"],
        "/var/log/kube-event-pipe/events.jsonl"
    );
    assert_eq!(
        data["KUBE_EVENT_PIPE_KAFKA_BROKERS"],
        "kafka-0.kafka:9092,kafka-1.kafka:9092"
    );
    assert_eq!(data["KUBE_EVENT_PIPE_KAFKA_TOPIC"], "kube-events");
    assert_eq!(
        data["KUBE_EVENT_PIPE_OTLP_ENDPOINT"],
        "http://otel-collector.observability:4318"
    );
    assert_eq!(
        data["KUBE_EVENT_PIPE_HTTP_URL"],
        "https://hooks.example.com/kube-events"
    );
    assert_eq!(data["KUBE_EVENT_PIPE_S3_FORMAT"], "protobuf");
    assert_eq!(data["KUBE_EVENT_PIPE_ENRICH"], "true");
    assert_eq!(data["KUBE_EVENT_PIPE_FILE_FSYNC"], "false");
    let pod = &workload(&objects)["spec"]["template"]["spec"];
    assert!(
        pod["containers"][0]["image"]
            .as_str()
            .unwrap()
            .contains("@sha256:")
    );
    assert_eq!(
        pod["shareProcessNamespace"], true,
        "logrotate signals the pipe"
    );
    let logrotate = find(&objects, "ConfigMap", "kube-event-pipe-logrotate");
    assert!(
        logrotate["data"]["logrotate.conf"]
            .as_str()
            .unwrap()
            .starts_with("/var/log/kube-event-pipe/events.jsonl {")
    );
    assert_eq!(
        find(&objects, "Namespace", "events")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    let s3 = chart().join("ci/s3-values.yaml");
    let objects = render(&python, &["--values", s3.to_str().unwrap()]);
    let account = find(&objects, "ServiceAccount", "kube-event-pipe");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/kube-event-pipe-s3"
    );
    let data = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    for (key, value) in [
        ("KUBE_EVENT_PIPE_SINK", "s3"),
        ("KUBE_EVENT_PIPE_S3_BUCKET", "my-cluster-events"),
        ("KUBE_EVENT_PIPE_S3_PREFIX", "events"),
        ("AWS_REGION", "eu-west-1"),
        ("KUBE_EVENT_PIPE_UID", "prod-eu-1"),
        ("KUBE_EVENT_PIPE_CLUSTER_NAME", "prod-eu-1"),
        ("KUBE_EVENT_PIPE_DESTINATION", "-"),
    ] {
        assert_eq!(data[key], value, "{key}");
    }

    let namespaces = chart().join("ci/namespaces-values.yaml");
    let objects = render(&python, &["--values", namespaces.to_str().unwrap()]);
    let data = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    assert_eq!(data["KUBE_EVENT_PIPE_NAMESPACE"], "payments,checkout");
    assert_eq!(data["KUBE_EVENT_PIPE_FIELD_SELECTOR"], "type=Warning");
    assert!(
        data["KUBE_EVENT_PIPE_LABEL_SELECTOR"].is_null(),
        "empty selectors stay unset"
    );
    assert_eq!(data["KUBE_EVENT_PIPE_FORMAT"], "eventrouter");
    let env = &workload(&objects)["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([{"name": "KUBE_EVENT_PIPE_BATCH_SIZE", "value": "1000"}])
    );
}

#[test]
fn ha_mode_runs_two_replicas_with_their_own_claims_a_lease_and_a_disruption_budget() {
    let Some(python) = helm_python() else { return };
    let ha = chart().join("ci/ha-values.yaml");
    let objects = render(&python, &["--values", ha.to_str().unwrap()]);
    assert!(all_of(&objects, "Deployment").is_empty());
    assert!(
        all_of(&objects, "PersistentVolumeClaim").is_empty(),
        "claims are per replica"
    );
    let set = find(&objects, "StatefulSet", "kube-event-pipe");
    assert_eq!(set["spec"]["replicas"], 2);
    assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
    let templates: Vec<&str> = set["spec"]["volumeClaimTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(templates, ["filters", "output"]);
    let service = find(
        &objects,
        "Service",
        set["spec"]["serviceName"].as_str().unwrap(),
    );
    assert_eq!(service["spec"]["clusterIP"], "None");
    let pod = &set["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert!(c["args"].is_null(), "settings come from the ConfigMap");
    assert_eq!(
        c["env"],
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
    let data = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    assert_eq!(data["KUBE_EVENT_PIPE_LEADER_ELECT"], "true");
    assert_eq!(data["KUBE_EVENT_PIPE_LEASE_NAME"], "kube-event-pipe");
    for default in [
        "KUBE_EVENT_PIPE_LEASE_DURATION_SEC",
        "KUBE_EVENT_PIPE_RENEW_DEADLINE_SEC",
        "KUBE_EVENT_PIPE_RETRY_PERIOD_SEC",
        "KUBE_EVENT_PIPE_STANDBY_MAX_BYTES",
    ] {
        assert!(data[default].is_null(), "{default}: the pipe's default");
    }
    let selector = &set["spec"]["selector"]["matchLabels"];
    assert_eq!(
        pod["affinity"]["podAntiAffinity"],
        json!({"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}
        ]})
    );
    let limit = c["resources"]["limits"]["memory"].as_str().unwrap();
    assert_eq!(limit, "256Mi", "room for what a standby holds");
    let pdb = find(&objects, "PodDisruptionBudget", "kube-event-pipe");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["selector"], set["spec"]["selector"]);
    // Off by default: one replica is the kustomize base's shape.
    let defaults: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    assert_eq!(defaults["ha"]["enabled"], false);

    // The Lease's name and timing, what a standby may hold, softer spreading, an affinity of
    // the user's own kept beside it.
    let set_ha = r#"ha={"enabled":true,"leaseName":"events-leader","leaseDurationSeconds":30,"renewDeadlineSeconds":20,"retryPeriodSeconds":4,"standbyMaxBytes":16777216,"antiAffinity":"preferred"}"#;
    let node_affinity = json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
    ]}});
    let set_affinity = format!("affinity={}", json!({"nodeAffinity": node_affinity}));
    let objects = render(
        &python,
        &["--set-json", set_ha, "--set-json", &set_affinity],
    );
    let data = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    for (key, value) in [
        ("KUBE_EVENT_PIPE_LEASE_NAME", "events-leader"),
        ("KUBE_EVENT_PIPE_LEASE_DURATION_SEC", "30"),
        ("KUBE_EVENT_PIPE_RENEW_DEADLINE_SEC", "20"),
        ("KUBE_EVENT_PIPE_RETRY_PERIOD_SEC", "4"),
        ("KUBE_EVENT_PIPE_STANDBY_MAX_BYTES", "16777216"),
    ] {
        assert_eq!(data[key], value, "{key}");
    }
    assert_eq!(
        rules(find(&objects, "Role", "kube-event-pipe-leader")),
        lease_rules("events-leader")
    );
    let set = find(&objects, "StatefulSet", "kube-event-pipe");
    let affinity = &set["spec"]["template"]["spec"]["affinity"];
    assert_eq!(affinity["nodeAffinity"], node_affinity);
    let preferred = &affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(preferred[0]["weight"], 100);
    assert_eq!(
        preferred[0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(
        affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_null()
    );
    // A leader must stop emitting before its Lease expires for the others.
    for (set, key) in [
        (
            r#"ha={"enabled":true,"leaseDurationSeconds":10,"renewDeadlineSeconds":10}"#,
            "ha.renewDeadlineSeconds",
        ),
        (
            r#"ha={"enabled":true,"retryPeriodSeconds":10}"#,
            "ha.retryPeriodSeconds",
        ),
    ] {
        let out = run_render(&python, &["--set-json", set]);
        assert!(!out.status.success(), "{set} rendered");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{set}: {stderr}");
    }
}

/// The chart in HA mode and the kustomize `ha` overlay deploy the same thing: replicas, claim,
/// spreading, budget, Lease role and name, identity, and the pod the base already shares.
#[test]
fn ha_mode_matches_the_kustomize_ha_overlay() {
    let Some(python) = helm_python() else { return };
    let overlay = kustomize("overlays/ha");
    let chart = render(&python, &["--set-json", "ha={\"enabled\":true}"]);
    let kinds = |objects: &[Value]| {
        let mut k: Vec<String> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .filter(|k| k != "Namespace")
            .collect();
        k.sort();
        k
    };
    assert_eq!(kinds(&chart), kinds(&overlay));

    let (a, b) = (
        find(&chart, "StatefulSet", "kube-event-pipe"),
        find(&overlay, "StatefulSet", "kube-event-pipe"),
    );
    for field in ["replicas", "podManagementPolicy", "serviceName"] {
        assert_eq!(a["spec"][field], b["spec"][field], "StatefulSet {field}");
    }
    let claims = |set: &Value| -> Vec<(Value, Value)> {
        set["spec"]["volumeClaimTemplates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["metadata"]["name"].clone(), t["spec"].clone()))
            .collect()
    };
    assert_eq!(claims(a), claims(b), "claim templates");
    let (pa, pb) = (
        &a["spec"]["template"]["spec"],
        &b["spec"]["template"]["spec"],
    );
    for field in [
        "securityContext",
        "terminationGracePeriodSeconds",
        "serviceAccountName",
    ] {
        assert_eq!(pa[field], pb[field], "pod {field}");
    }
    // The same spreading; the chart's selector also names the release.
    let spread = |pod: &Value| {
        let mut terms =
            pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                .clone();
        terms[0]["labelSelector"] = Value::Null;
        terms
    };
    assert_eq!(spread(pa), spread(pb));
    let (ca, cb) = (&pa["containers"][0], &pb["containers"][0]);
    for field in [
        "name",
        "image",
        "env",
        "envFrom",
        "securityContext",
        "resources",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "volumeMounts",
    ] {
        assert_eq!(ca[field], cb[field], "container {field}");
    }
    assert_eq!(
        find(&chart, "ConfigMap", "kube-event-pipe")["data"],
        find(&overlay, "ConfigMap", "kube-event-pipe")["data"],
        "the pipe's settings"
    );
    assert_eq!(
        find(&chart, "PodDisruptionBudget", "kube-event-pipe")["spec"]["maxUnavailable"],
        find(&overlay, "PodDisruptionBudget", "kube-event-pipe")["spec"]["maxUnavailable"]
    );
    for (kind, name) in [
        ("Role", "kube-event-pipe-leader"),
        ("ClusterRole", "kube-event-pipe"),
    ] {
        assert_eq!(
            rules(find(&chart, kind, name)),
            rules(find(&overlay, kind, name)),
            "{kind} {name}"
        );
    }
    for (kind, name) in [
        ("RoleBinding", "kube-event-pipe-leader"),
        ("ClusterRoleBinding", "kube-event-pipe"),
    ] {
        for field in ["roleRef", "subjects"] {
            assert_eq!(
                find(&chart, kind, name)[field],
                find(&overlay, kind, name)[field],
                "{kind} {name} {field}"
            );
        }
    }
    let (sa, sb) = (
        find(&chart, "Service", "kube-event-pipe"),
        find(&overlay, "Service", "kube-event-pipe"),
    );
    for field in ["clusterIP", "ports"] {
        assert_eq!(sa["spec"][field], sb["spec"][field], "Service {field}");
    }
}

#[test]
fn the_prometheus_rule_installs_the_alerts_of_deploy_prometheus() {
    let Some(python) = helm_python() else { return };
    assert!(
        render(&python, &[])
            .iter()
            .all(|o| o["kind"] != "PrometheusRule"),
        "off by default"
    );
    let objects = render(
        &python,
        &[
            "--set-json",
            "prometheusRule={\"enabled\":true,\"job\":\"pods\"}",
        ],
    );
    let rule = find(&objects, "PrometheusRule", "kube-event-pipe");
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/rules.yaml")).unwrap();
    let file: Value =
        serde_yaml_ng::from_str(&text.replace("job=\"kube-event-pipe\"", "job=\"pods\"")).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
    assert!(
        text.contains("job=\"kube-event-pipe\""),
        "the job the chart rewrites"
    );
}

#[test]
fn notes_say_how_to_see_the_events_and_the_chart_lints_clean() {
    let Some(python) = helm_python() else { return };
    let out = run_render(&python, &["--notes"]);
    assert!(out.status.success());
    let notes = String::from_utf8(out.stdout).unwrap();
    assert!(
        notes.contains("kubectl -n kube-event-pipe logs deploy/kube-event-pipe"),
        "{notes}"
    );
    assert!(notes.contains("kube-event-pipe inspect"), "{notes}");
    let file = chart().join("ci/file-values.yaml");
    let out = run_render(&python, &["--notes", "--values", file.to_str().unwrap()]);
    let notes = String::from_utf8(out.stdout).unwrap();
    assert!(
        notes.contains("tail -f /var/log/kube-event-pipe/events.jsonl"),
        "{notes}"
    );
    assert!(!notes.contains(" logs deploy/"), "no stdout sink: {notes}");
    // In HA mode the leader writes the events: the notes find it through the Lease.
    let ha = chart().join("ci/ha-values.yaml");
    let out = run_render(&python, &["--notes", "--values", ha.to_str().unwrap()]);
    let notes = String::from_utf8(out.stdout).unwrap();
    assert!(
        notes.contains(
            "logs \"$(kubectl -n kube-event-pipe get lease kube-event-pipe -o jsonpath='{.spec.holderIdentity}')\""
        ),
        "{notes}"
    );
    assert!(
        notes.contains("rollout status statefulset/kube-event-pipe"),
        "{notes}"
    );

    for file in example_values() {
        let out = run_render(&python, &["--lint", "--values", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "helm lint --strict {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
