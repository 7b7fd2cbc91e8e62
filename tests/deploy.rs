//! The deployment artefacts as a cluster would receive them: every kustomize overlay rendered by
//! the real `kubectl kustomize` (the `ha` overlay's StatefulSet, Lease role and budget included),
//! and the Dockerfile checked against the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rendered objects of one overlay (or the base).
fn render(dir: &str) -> Vec<Value> {
    let path = repo().join("deploy/kustomize").join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("run kubectl (CI installs it; see .ci/run)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
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

const OVERLAYS: &[&str] = &[
    "overlays/stdout",
    "overlays/file",
    "overlays/s3",
    "overlays/otlp",
    "overlays/enriched",
    "overlays/kafka",
    "overlays/ha",
];

/// The one workload of an overlay: the Deployment, or the StatefulSet of the `ha` overlay.
fn workload(objects: &[Value]) -> &Value {
    let mut found = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet");
    let w = found.next().expect("a Deployment or a StatefulSet");
    assert!(found.next().is_none(), "one workload");
    w
}

/// The spec of the claim the filters live on: the PersistentVolumeClaim the Deployment mounts,
/// or the StatefulSet's claim template (one claim per replica).
fn filter_claim<'a>(objects: &'a [Value], overlay: &str) -> &'a Value {
    let w = workload(objects);
    let pod = &w["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kube-event-pipe")
        .unwrap_or_else(|| panic!("{overlay}: nothing mounted at the persistence path"));
    let volume = &mount["name"];
    if w["kind"] == "StatefulSet" {
        return &w["spec"]["volumeClaimTemplates"]
            .as_array()
            .expect("claim templates")
            .iter()
            .find(|t| t["metadata"]["name"] == *volume)
            .unwrap_or_else(|| panic!("{overlay}: no claim template {volume}"))["spec"];
    }
    let claim = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == *volume)
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .unwrap_or_else(|| panic!("{overlay}: {volume} is not a persistent volume"));
    &find(objects, "PersistentVolumeClaim", claim)["spec"]
}

/// The restricted Pod Security Standard, field by field, for the pod and every container.
fn assert_restricted(overlay: &str, deployment: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    let pod_sc = &pod["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true, "{overlay}");
    assert!(
        pod_sc["runAsUser"].as_u64().is_some_and(|u| u >= 10_000),
        "{overlay}: high non-root UID"
    );
    assert_eq!(
        pod_sc["seccompProfile"]["type"], "RuntimeDefault",
        "{overlay}"
    );
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[key].is_null() || pod[key] == false, "{overlay}: {key}");
    }
    let containers = pod["containers"].as_array().expect("containers");
    assert!(!containers.is_empty());
    for c in containers {
        let name = &c["name"];
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay} {name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay} {name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            json!(["ALL"]),
            "{overlay} {name}"
        );
        assert!(sc["capabilities"]["add"].is_null(), "{overlay} {name}");
        assert!(sc["privileged"].is_null() || sc["privileged"] == false);
        assert_ne!(sc["runAsNonRoot"], false, "{overlay} {name}");
        assert_ne!(sc["runAsUser"], 0, "{overlay} {name}");
        for kind in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][res].is_string(),
                    "{overlay} {name}: resources.{kind}.{res}"
                );
            }
        }
        assert!(
            c["livenessProbe"].is_object(),
            "{overlay} {name}: liveness probe"
        );
        assert!(
            c["readinessProbe"].is_object(),
            "{overlay} {name}: readiness probe"
        );
    }
}

#[test]
fn every_overlay_renders_one_workload_whose_pod_meets_the_restricted_standard() {
    for overlay in OVERLAYS {
        let objects = render(overlay);
        let w = workload(&objects);
        assert_eq!(w["metadata"]["name"], "kube-event-pipe", "{overlay}");
        assert_eq!(w["metadata"]["namespace"], "kube-event-pipe");
        if w["kind"] == "Deployment" {
            // One process owns the filter volume: one replica, and no overlap on an update.
            assert_eq!(w["spec"]["replicas"], 1, "{overlay}");
            assert_eq!(w["spec"]["strategy"]["type"], "Recreate", "{overlay}");
        } else {
            // Its own shape: the_ha_overlay_runs_two_replicas_….
            assert_eq!(
                *overlay, "overlays/ha",
                "only the ha overlay runs a StatefulSet"
            );
        }
        assert_restricted(overlay, w);
        let ns = find(&objects, "Namespace", "kube-event-pipe");
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        // The filters live on a claim, not in the container.
        assert_eq!(
            filter_claim(&objects, overlay)["accessModes"],
            json!(["ReadWriteOnce"]),
            "{overlay}"
        );
        assert!(!all_of(&objects, "NetworkPolicy").is_empty(), "{overlay}");
        for o in &objects {
            let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"]
                .contains(&o["kind"].as_str().unwrap());
            if !cluster_scoped {
                assert_eq!(
                    o["metadata"]["namespace"], "kube-event-pipe",
                    "{overlay}: {} {}",
                    o["kind"], o["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn probes_hit_healthz_and_readyz_on_the_port_the_config_listens_on() {
    for overlay in ["overlays/stdout", "overlays/ha"] {
        probes_of(overlay);
    }
}

fn probes_of(overlay: &str) {
    let objects = render(overlay);
    let deployment = workload(&objects);
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "kube-event-pipe");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let port_name = c["livenessProbe"]["httpGet"]["port"].as_str().unwrap();
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port_name);
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port_name)
        .expect("the probes' named port")["containerPort"]
        .as_u64()
        .unwrap();
    let config = find(&objects, "ConfigMap", "kube-event-pipe");
    let listen = config["data"]["KUBE_EVENT_PIPE_LISTEN"].as_str().unwrap();
    assert!(
        listen.ends_with(&format!(":{port}")),
        "{listen} vs port {port}"
    );
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"], "kube-event-pipe",
        "the container reads the ConfigMap"
    );
    // The drain must finish inside the grace period.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let drain: u64 = config["data"]["KUBE_EVENT_PIPE_SHUTDOWN_TIMEOUT_SEC"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        drain < grace,
        "{overlay}: shutdown timeout {drain} s >= grace {grace} s"
    );
}

/// One grant: (apiGroup, resource, verbs, resourceNames), the names empty when the rule has none.
type Rule = (String, String, Vec<String>, Vec<String>);

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Every rule of a role, flattened per group and resource and sorted.
fn rules(role: &Value) -> Vec<Rule> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let verbs = strings(&rule["verbs"]);
        let names = strings(&rule["resourceNames"]);
        for group in strings(&rule["apiGroups"]) {
            for res in strings(&rule["resources"]) {
                out.push((group.clone(), res, verbs.clone(), names.clone()));
            }
        }
    }
    out.sort();
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: &[&str]) -> Rule {
    let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    (group.into(), resource.into(), owned(verbs), owned(names))
}

fn assert_bound(objects: &[Value], role: &str) {
    let binding = find(objects, "ClusterRoleBinding", role);
    assert_eq!(binding["roleRef"]["name"], role);
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kube-event-pipe", "namespace": "kube-event-pipe"}])
    );
    assert_eq!(
        workload(objects)["spec"]["template"]["spec"]["serviceAccountName"],
        "kube-event-pipe"
    );
}

#[test]
fn rbac_is_list_and_watch_of_events_and_get_only_with_enrichment() {
    for overlay in [
        "overlays/stdout",
        "overlays/file",
        "overlays/s3",
        "overlays/kafka",
        "overlays/otlp",
        "overlays/ha",
    ] {
        let objects = render(overlay);
        let roles = all_of(&objects, "ClusterRole");
        assert_eq!(roles.len(), 1, "{overlay}: only the events role");
        assert_eq!(
            rules(roles[0]),
            vec![rule("", "events", &["list", "watch"], &[])]
        );
        assert_bound(&objects, "kube-event-pipe");
        // Namespaced roles: only the ha overlay's, for its Lease (checked in its own test).
        let namespaced: Vec<&str> = all_of(&objects, "Role")
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap())
            .collect();
        let expected: &[&str] = if overlay == "overlays/ha" {
            &["kube-event-pipe-leader"]
        } else {
            &[]
        };
        assert_eq!(namespaced, expected, "{overlay}");
    }

    let objects = render("overlays/enriched");
    let role = find(&objects, "ClusterRole", "kube-event-pipe-enrichment");
    let mut expected: Vec<Rule> = [
        ("", "pods"),
        ("", "nodes"),
        ("", "services"),
        ("", "persistentvolumeclaims"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    .iter()
    .map(|(g, r)| rule(g, r, &["get"], &[]))
    .collect();
    expected.sort();
    assert_eq!(rules(role), expected);
    assert_bound(&objects, "kube-event-pipe-enrichment");
    assert_bound(&objects, "kube-event-pipe");
}

#[test]
fn the_file_overlay_rotates_with_a_sidecar_that_signals_the_pipe() {
    let objects = render("overlays/file");
    let deployment = find(&objects, "Deployment", "kube-event-pipe");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["shareProcessNamespace"], true);
    let containers = pod["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kube-event-pipe", "logrotate"]);
    // Both mount the output volume at the directory the pipe writes to.
    let config = find(&objects, "ConfigMap", "kube-event-pipe");
    let destination = PathBuf::from(
        config["data"]["KUBE_EVENT_PIPE_DESTINATION"]
            .as_str()
            .unwrap(),
    );
    let dir = destination.parent().unwrap().to_str().unwrap();
    for c in containers {
        let mounted = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "output" && m["mountPath"] == dir);
        assert!(mounted, "{} mounts {dir}", c["name"]);
    }
    // The generated logrotate ConfigMap (its name carries a hash) rotates that file and HUPs.
    let rotate = all_of(&objects, "ConfigMap")
        .into_iter()
        .find_map(|c| c["data"]["logrotate.conf"].as_str())
        .expect("the logrotate config");
    assert!(rotate.contains(destination.to_str().unwrap()), "{rotate}");
    assert!(rotate.contains("postrotate"), "{rotate}");
    assert!(rotate.contains("pkill -HUP -x kube-event-pipe"), "{rotate}");
    // pkill -x matches the 15-character process name the kernel keeps.
    assert!("kube-event-pipe".len() <= 15);
}

#[test]
fn the_s3_overlay_names_the_bucket_and_an_irsa_role() {
    let objects = render("overlays/s3");
    let config = find(&objects, "ConfigMap", "kube-event-pipe");
    assert_eq!(config["data"]["KUBE_EVENT_PIPE_SINK"], "s3");
    assert!(config["data"]["KUBE_EVENT_PIPE_S3_BUCKET"].is_string());
    assert!(config["data"]["AWS_REGION"].is_string());
    let sa = find(&objects, "ServiceAccount", "kube-event-pipe");
    let arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .expect("IRSA annotation");
    assert!(arn.starts_with("arn:aws:iam::"), "{arn}");
    // No credentials in the cluster's objects.
    let text = serde_json::to_string(&objects).unwrap();
    assert!(!text.contains("AWS_SECRET_ACCESS_KEY") && !text.contains("AWS_ACCESS_KEY_ID"));
}

#[test]
fn the_otlp_overlay_exports_to_an_in_cluster_collector_with_dead_letters_on_the_volume() {
    let objects = render("overlays/otlp");
    let data = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    assert_eq!(data["KUBE_EVENT_PIPE_SINK"], "otlp");
    let endpoint = data["KUBE_EVENT_PIPE_OTLP_ENDPOINT"]
        .as_str()
        .expect("endpoint");
    assert!(
        endpoint.starts_with("http://") && endpoint.ends_with(".svc.cluster.local:4318"),
        "a collector Service's OTLP/HTTP port: {endpoint}"
    );
    // Dead letters live on the filters' volume, the only writable path in the pod.
    let dead = data["KUBE_EVENT_PIPE_DEAD_LETTER_DIR"]
        .as_str()
        .expect("dead-letter dir");
    let deployment = find(&objects, "Deployment", "kube-event-pipe");
    let mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| dead.starts_with(m["mountPath"].as_str().unwrap_or("?"))
                && m["readOnly"] != true),
        "{dead} is on no writable mount: {mounts:?}"
    );
}

/// Two replicas, each with its own claim, spread over nodes, one Lease between them, and the
/// base's pod otherwise: what `docs/operations.md` ("High availability") describes.
#[test]
fn the_ha_overlay_runs_two_replicas_with_their_own_claims_a_lease_role_and_a_disruption_budget() {
    let objects = render("overlays/ha");
    assert!(
        all_of(&objects, "Deployment").is_empty(),
        "the StatefulSet replaces it"
    );
    assert!(
        all_of(&objects, "PersistentVolumeClaim").is_empty(),
        "claims are per replica"
    );
    let set = find(&objects, "StatefulSet", "kube-event-pipe");
    let spec = &set["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let templates: Vec<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .expect("claim templates")
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(templates, ["filters"]);
    let service = find(&objects, "Service", spec["serviceName"].as_str().unwrap());
    assert_eq!(service["spec"]["clusterIP"], "None", "headless");

    // Every selector picks exactly the pods of this set.
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let selects_the_pods = |selector: &Value, what: &str| {
        let selector = selector.as_object().expect(what);
        assert!(!selector.is_empty(), "{what}");
        for (k, v) in selector {
            assert_eq!(&pod_labels[k], v, "{what}: {k}");
        }
    };
    selects_the_pods(&spec["selector"]["matchLabels"], "StatefulSet selector");
    selects_the_pods(&service["spec"]["selector"], "Service selector");
    let budget = find(&objects, "PodDisruptionBudget", "kube-event-pipe");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert!(budget["spec"]["minAvailable"].is_null());
    selects_the_pods(
        &budget["spec"]["selector"]["matchLabels"],
        "budget selector",
    );

    // Never two replicas on one node.
    let pod = &spec["template"]["spec"];
    let anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .expect("required pod anti-affinity");
    assert_eq!(anti.len(), 1);
    assert_eq!(anti[0]["topologyKey"], "kubernetes.io/hostname");
    selects_the_pods(&anti[0]["labelSelector"]["matchLabels"], "anti-affinity");

    // Leader election on, the Lease named, the holder's identity from the pod's name.
    let config = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    assert_eq!(config["KUBE_EVENT_PIPE_LEADER_ELECT"], "true");
    let lease = config["KUBE_EVENT_PIPE_LEASE_NAME"]
        .as_str()
        .expect("the Lease's name");
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "kube-event-pipe");
    assert_eq!(
        c["env"],
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
    assert!(c["args"].is_null(), "settings come from the ConfigMap");

    // The Lease role: get and update of that one Lease, create of leases (RBAC cannot name an
    // object that does not exist yet), in the pipe's own namespace, bound to its account.
    let role = find(&objects, "Role", "kube-event-pipe-leader");
    assert_eq!(role["metadata"]["namespace"], "kube-event-pipe");
    let mut expected = vec![
        rule(
            "coordination.k8s.io",
            "leases",
            &["get", "update"],
            &[lease],
        ),
        rule("coordination.k8s.io", "leases", &["create"], &[]),
    ];
    expected.sort();
    assert_eq!(rules(role), expected);
    let binding = find(&objects, "RoleBinding", "kube-event-pipe-leader");
    assert_eq!(binding["metadata"]["namespace"], "kube-event-pipe");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kube-event-pipe-leader"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "kube-event-pipe"}])
    );

    // Apart from those parts, and the memory a standby may hold, the base's pod.
    let base = render("base");
    let base_template = &find(&base, "Deployment", "kube-event-pipe")["spec"]["template"];
    let strip = |template: &Value| {
        let mut t = template.clone();
        let spec = t["spec"].as_object_mut().unwrap();
        spec.remove("affinity");
        spec.remove("volumes");
        let c = t["spec"]["containers"][0].as_object_mut().unwrap();
        c.remove("env");
        c["resources"]["limits"]
            .as_object_mut()
            .unwrap()
            .remove("memory");
        t
    };
    assert_eq!(strip(&spec["template"]), strip(base_template));
    let memory = |t: &Value| {
        quantity_bytes(
            t["spec"]["containers"][0]["resources"]["limits"]["memory"]
                .as_str()
                .unwrap(),
        )
    };
    // Room for the default --standby-max-bytes (64 MiB) above the base's limit.
    assert!(memory(&spec["template"]) >= memory(base_template) + (64 << 20));
    assert_eq!(
        filter_claim(&objects, "overlays/ha"),
        &find(&base, "PersistentVolumeClaim", "kube-event-pipe-filters")["spec"],
        "each replica's claim is the base's"
    );
}

/// Dockerfile instructions, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if let Some((op, args)) = current.trim().split_once(' ') {
            out.push((op.to_ascii_uppercase(), args.trim().to_string()));
        }
        current.clear();
    }
    out
}

#[test]
fn the_dockerfile_copies_existing_paths_and_runs_the_binary_as_non_root() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let steps = instructions(&text);
    let stages: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignored
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut copied = Vec::new();
    for (op, args) in &steps {
        if op != "COPY" || args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(repo().join(source).exists(), "COPY {source}: no such path");
            assert!(
                !ignored.contains(source),
                "COPY {source} is in .dockerignore"
            );
            copied.push(source.trim_end_matches('/').to_string());
        }
    }
    // Everything cargo reads to build the binary.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "benches",
        "build.rs",
        "proto",
    ] {
        if repo().join(needed).exists() {
            assert!(
                copied.iter().any(|c| c == needed),
                "the build stage needs {needed}"
            );
        }
    }

    let final_stage = &steps[*stages.last().unwrap()..];
    assert!(
        final_stage[0].1.contains("distroless") || final_stage[0].1.starts_with("scratch"),
        "final base: {}",
        final_stage[0].1
    );
    let user = final_stage
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .expect("the final stage sets USER")
        .1
        .clone();
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "USER {user}");

    let manifest: toml_lite::Manifest = toml_lite::read(&repo().join("Cargo.toml"));
    let entry = final_stage
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .expect("ENTRYPOINT")
        .1
        .clone();
    let entry: Vec<String> = serde_json::from_str(&entry).expect("exec-form ENTRYPOINT");
    assert!(
        entry[0].ends_with(&format!("/{}", manifest.bin)),
        "{entry:?} vs {}",
        manifest.bin
    );
    let build = steps
        .iter()
        .find(|(op, args)| op == "RUN" && args.contains("cargo build"))
        .expect("a cargo build step");
    assert!(
        build.1.contains(&format!("--bin {}", manifest.bin)),
        "{}",
        build.1
    );
    assert!(build.1.contains("--locked"), "{}", build.1);
}

/// Just enough of Cargo.toml: the binary's name.
mod toml_lite {
    use std::path::Path;

    pub struct Manifest {
        pub bin: String,
    }

    pub fn read(path: &Path) -> Manifest {
        let text = std::fs::read_to_string(path).expect("Cargo.toml");
        let mut in_bin = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
                continue;
            }
            if in_bin && let Some(v) = line.strip_prefix("name") {
                let name = v.trim().trim_start_matches('=').trim().trim_matches('"');
                return Manifest {
                    bin: name.to_string(),
                };
            }
        }
        panic!("Cargo.toml declares no [[bin]]");
    }
}

#[test]
fn the_kafka_overlay_reads_its_password_and_ca_from_a_mounted_secret() {
    let objects = render("overlays/kafka");
    let config = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
    assert_eq!(config["KUBE_EVENT_PIPE_SINK"], "stdout,kafka");
    assert_eq!(
        config["KUBE_EVENT_PIPE_KAFKA_SASL_MECHANISM"],
        "SCRAM-SHA-512"
    );
    // No password in the ConfigMap or the environment: a file from the Secret.
    assert!(config.get("KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD").is_none());
    let password = config["KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD_FILE"]
        .as_str()
        .unwrap();
    let ca = config["KUBE_EVENT_PIPE_KAFKA_TLS_CA"].as_str().unwrap();
    let deployment = find(&objects, "Deployment", "kube-event-pipe");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "kube-event-pipe-kafka")
        .expect("the Secret as a volume");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("mounted");
    assert_eq!(mount["readOnly"], true);
    let dir = mount["mountPath"].as_str().unwrap();
    assert_eq!(password, format!("{dir}/password"));
    assert_eq!(ca, format!("{dir}/ca.crt"));
}

/// A Kubernetes quantity such as `1Gi` or `500M` in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, unit) = q.split_at(split);
    let number: u64 = number.parse().expect("a whole quantity");
    let scale: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => panic!("unexpected unit {other:?} in {q}"),
    };
    number * scale
}

/// The claim must hold what the startup check asks for (generations + 1 files at the configured
/// size, docs/operations.md) many times over: the claim outlives changes of the settings.
#[test]
fn the_filter_claim_holds_the_configured_generations_with_room_to_spare() {
    for overlay in OVERLAYS {
        let objects = render(overlay);
        let storage = filter_claim(&objects, overlay)["resources"]["requests"]["storage"]
            .as_str()
            .expect("a storage request");
        let config = &find(&objects, "ConfigMap", "kube-event-pipe")["data"];
        let setting =
            |name: &str, default: &str| config[name].as_str().unwrap_or(default).replace('_', "");
        let capacity: u64 = setting("KUBE_EVENT_PIPE_FILTER_CAPACITY", "1000000")
            .parse()
            .unwrap();
        let rate: f64 = setting("KUBE_EVENT_PIPE_FILTER_ERROR_RATE", "0.000001")
            .parse()
            .unwrap();
        let generations: u64 = setting("KUBE_EVENT_PIPE_BATCH_COUNT", "3").parse().unwrap();
        let (bits, _) = kube_event_pipe::dedup::filter::size_for(capacity, rate);
        let per_generation = kube_event_pipe::dedup::header::HEADER_LEN as u64 + bits / 8;
        let needed = (generations + 1) * per_generation.div_ceil(4096) * 4096;
        assert!(
            quantity_bytes(storage) >= 10 * needed,
            "{overlay}: claim {storage} for {needed} bytes of filters"
        );
    }
}
