//! The Kubernetes manifests in `deploy/`: every resource of every YAML file
//! passes `kubernetes-validate --strict` (unknown fields are errors) against
//! [`K8S_VERSIONS`], the agent DaemonSets have the shape the agent relies on
//! (host PID namespace, exactly the intended capabilities, the token from a
//! Secret, probes on /healthz), the validator really rejects broken
//! manifests, and memtrace works with exactly the manifest's capabilities
//! (and not without CAP_SYS_ADMIN, which the kernel's uprobe PMU checks).
//!
//! The Prometheus alerting rules in `deploy/prometheus/` pass `promtool
//! check rules` and their unit tests (`promtool test rules`), and, fed a
//! real agent's /metrics, use only metrics it exports and fire for the
//! process that leaks and nothing else.
//!
//! kubernetes-validate is `$KUBERNETES_VALIDATE` (set by `cargo xtask
//! test`), else the venv `cargo xtask test` installs it into
//! (`target/xtask/k8s-venv`), else on PATH; without it the tests fail (they
//! never skip).
//! YAML is read with the PyYAML that kubernetes-validate depends on: no YAML
//! crate needed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use memtrace_integration::{
    compile_c, http, memtrace_bin, scratch_dir, secs, workspace_root, Report, StackExt, Tracer,
    Workload,
};
use serde_json::Value;

/// Kubernetes versions whose schemas the manifests are validated against:
/// the oldest we support (1.30 added the container `appArmorProfile` field
/// the least-privilege DaemonSet uses) and the newest kubernetes-validate
/// 1.37.0 (what `cargo xtask test` installs) ships.
const K8S_VERSIONS: [&str; 2] = ["1.30", "1.37"];

/// The manifests that must exist (any other `deploy/*.yaml` is validated
/// too).
const BASE_MANIFEST: &str = "base.yaml";
const MANIFEST: &str = "memtrace.yaml";
const PRIVILEGED_MANIFEST: &str = "memtrace-privileged.yaml";

/// Capabilities of the least-privilege DaemonSet, exactly.
/// SYS_ADMIN: the kernel's uprobe PMU requires it (see the manifest).
const CAPABILITIES: [&str; 6] = [
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "SYS_RESOURCE",
    "DAC_READ_SEARCH",
    "SYS_ADMIN",
];

const AGENT_PORT: u64 = 9464;

/// kubernetes-validate and a Python that can `import yaml`.
struct Tool {
    exe: PathBuf,
    python: PathBuf,
}

/// The tool, located once per test binary.
fn tool() -> &'static Tool {
    static TOOL: OnceLock<Tool> = OnceLock::new();
    TOOL.get_or_init(|| {
        let exe = match locate() {
            Ok(exe) => exe,
            Err(why) => panic!(
                "kubernetes-validate is not available ({why}); `cargo xtask test` installs it"
            ),
        };
        let python = python_with_yaml(&exe).unwrap_or_else(|| {
            panic!(
                "no Python with PyYAML found for {} (tried its venv's python3, its \
                 shebang and python3 on PATH)",
                exe.display()
            )
        });
        Tool { exe, python }
    })
}

/// `$KUBERNETES_VALIDATE`, else the venv `cargo xtask test` installs into
/// (`target/xtask/k8s-venv`, honouring `CARGO_TARGET_DIR` like cargo), else
/// `kubernetes-validate` on PATH.
fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KUBERNETES_VALIDATE={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let root = workspace_root();
    let target = ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .into_iter()
        .find_map(std::env::var_os)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let venv = target.join("xtask/k8s-venv/bin/kubernetes-validate");
    if venv.is_file() {
        return Ok(venv);
    }
    which("kubernetes-validate").ok_or_else(|| format!("not in {} nor on PATH", venv.display()))
}

/// Runs `cmd`, describing any failure with its output.
fn run_ok(cmd: &mut Command) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The Python kubernetes-validate runs on (so PyYAML is there): its venv's
/// `python` (every venv has it), else its shebang interpreter, else Debian's
/// `/usr/bin/python3`.
fn python_with_yaml(exe: &Path) -> Option<PathBuf> {
    let real = exe.canonicalize().unwrap_or_else(|_| exe.to_path_buf());
    let sibling = real.parent().map(|dir| dir.join("python"));
    let shebang = std::fs::read_to_string(&real).ok().and_then(|text| {
        let line = text.lines().next()?.strip_prefix("#!")?.trim().to_owned();
        // `#!/usr/bin/env python3` names the interpreter second.
        let mut words = line.split_whitespace();
        let first = words.next()?;
        Some(PathBuf::from(if first.ends_with("/env") {
            words.next()?
        } else {
            first
        }))
    });
    [sibling, shebang, Some(PathBuf::from("/usr/bin/python3"))]
        .into_iter()
        .flatten()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import yaml"])
                .output()
                .is_ok_and(|out| out.status.success())
        })
}

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// Every `deploy/*.yaml`, by file name, sorted.
fn manifests() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|entry| entry.expect("readable deploy/").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    names.sort();
    for required in [BASE_MANIFEST, MANIFEST, PRIVILEGED_MANIFEST] {
        assert!(
            names.iter().any(|n| n == required),
            "deploy/{required} is missing (found {names:?})"
        );
    }
    names
}

/// The documents of a YAML file as JSON (empty documents dropped, like
/// kubectl and kubernetes-validate do).
fn load_yaml(tool: &Tool, path: &Path) -> Vec<Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d]\n\
        json.dump(docs, sys.stdout)\n";
    let out = run_ok(Command::new(&tool.python).args(["-c", SCRIPT]).arg(path))
        .unwrap_or_else(|e| panic!("cannot load {} as YAML: {e}", path.display()));
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(docs)) => docs,
        other => panic!(
            "unexpected YAML loader output for {}: {other:?}",
            path.display()
        ),
    }
}

/// `kubernetes-validate --strict -k V...` on `files`, run in `dir` so the
/// output names files as given.
fn validate(tool: &Tool, dir: &Path, files: &[String]) -> (Output, String) {
    let mut cmd = Command::new(&tool.exe);
    cmd.current_dir(dir).arg("--strict");
    for version in K8S_VERSIONS {
        cmd.args(["-k", version]);
    }
    cmd.args(files);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.exe.display()));
    let text = format!(
        "$ {cmd:?}\n{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// `kind/name` the way kubernetes-validate names a resource.
fn resource_id(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().expect("kind").to_lowercase(),
        doc["metadata"]["name"].as_str().expect("metadata.name")
    )
}

#[test]
fn manifests_pass_strict_validation() {
    let tool = tool();
    let version = run_ok(Command::new(&tool.exe).arg("--version"))
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("kubernetes-validate {version} at {}", tool.exe.display());

    let files = manifests();
    let (out, text) = validate(tool, &deploy_dir(), &files);
    eprintln!("{text}");
    assert!(out.status.success(), "validation failed:\n{text}");

    // Every line is a pass: a WARN (no schema for a kind, e.g. a typo in
    // apiVersion) would exit 0 without validating anything.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut passed = BTreeSet::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line.strip_prefix("INFO ").and_then(|rest| {
            let (file, rest) = rest.split_once(" passed for resource ")?;
            let (resource, version) = rest.split_once(" against version ")?;
            Some((
                file.to_owned(),
                resource.to_owned(),
                version.trim().to_owned(),
            ))
        });
        let Some(entry) = parsed else {
            panic!("not a pass: {line:?}\n{text}");
        };
        passed.insert(entry);
    }

    // ...and every resource of every file passed against every version.
    for file in &files {
        let docs = load_yaml(tool, &deploy_dir().join(file));
        assert!(!docs.is_empty(), "{file} has no resources");
        for doc in &docs {
            for version in K8S_VERSIONS {
                let key = (file.clone(), resource_id(doc), version.to_owned());
                assert!(
                    passed.contains(&key),
                    "no pass reported for {key:?}:\n{text}"
                );
            }
        }
    }
}

#[test]
fn broken_manifests_are_rejected() {
    let tool = tool();
    let original = std::fs::read_to_string(deploy_dir().join(MANIFEST)).expect("read manifest");
    assert_eq!(
        original.matches("hostPID: true").count(),
        1,
        "{MANIFEST} should set hostPID once"
    );
    let dir = scratch_dir("deploy");
    // A wrong type, and a misspelt field that only --strict catches.
    let cases = [
        ("wrong-type.yaml", "hostPID: \"yes\"", "hostPID"),
        (
            "unknown-field.yaml",
            "hostPid: true",
            "'hostPid' was unexpected",
        ),
    ];
    for (file, replacement, expected) in cases {
        std::fs::write(
            dir.join(file),
            original.replace("hostPID: true", replacement),
        )
        .expect("write broken manifest");
        let (out, text) = validate(tool, &dir, &[file.to_owned()]);
        assert!(!out.status.success(), "{file} was accepted:\n{text}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().any(|l| l.starts_with("ERROR ")
                && l.contains("daemonset/memtrace-agent")
                && l.contains(expected)),
            "{file}: no ERROR for daemonset/memtrace-agent mentioning {expected:?}:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The resource of `kind` named `name` among `docs`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Whether `value` contains `"privileged": true` anywhere.
fn has_privileged_true(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k == "privileged" && v == true) || has_privileged_true(v)),
        Value::Array(items) => items.iter().any(has_privileged_true),
        _ => false,
    }
}

fn strings(value: &Value) -> BTreeSet<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

/// Checks shared by both agent DaemonSets; returns the agent container.
fn check_agent_daemonset<'a>(ds: &'a Value, name: &str) -> &'a Value {
    let what = format!("daemonset/{name}");
    assert_eq!(ds["metadata"]["namespace"], "memtrace", "{what}");
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true, "{what}: hostPID");
    assert_eq!(spec["serviceAccountName"], "memtrace", "{what}");
    assert_eq!(spec["automountServiceAccountToken"], false, "{what}");
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"operator": "Exists"}]),
        "{what}: runs on every node"
    );

    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{what}");
    assert_eq!(annotations["prometheus.io/port"], "9464", "{what}");
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{what}");

    // The selector matches the pod template.
    let labels = pod["metadata"]["labels"].as_object().expect("pod labels");
    for (key, value) in ds["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(labels.get(key), Some(value), "{what}: selector {key}");
    }

    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{what}: one container");
    let c = &containers[0];
    assert_eq!(c["command"], serde_json::json!(["memtrace"]), "{what}");
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    assert_eq!(args.first(), Some(&"agent"), "{what}: args {args:?}");
    for wanted in [
        "--listen=0.0.0.0:9464",
        "--reports-dir=/var/lib/memtrace/reports",
    ] {
        assert!(args.contains(&wanted), "{what}: {wanted} not in {args:?}");
    }

    let env = c["env"].as_array().expect("env");
    let var = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{what}: no env {n}"))
    };
    assert_eq!(
        var("MEMTRACE_TOKEN")["valueFrom"],
        serde_json::json!({"secretKeyRef": {"name": "memtrace-token", "key": "token"}}),
        "{what}: the token comes from the Secret"
    );
    assert_eq!(
        var("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName",
        "{what}"
    );

    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{what}: {probe}");
        assert_eq!(get["port"], AGENT_PORT, "{what}: {probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], AGENT_PORT, "{what}");
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi", "{what}");

    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"], 0, "{what}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");

    // Exactly these host paths, and where they are mounted.
    let host_paths: BTreeSet<&str> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        BTreeSet::from(["/sys/kernel/tracing", "/var/lib/memtrace"]),
        "{what}: hostPath volumes"
    );
    let mounts: BTreeSet<&str> = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| m["mountPath"].as_str().expect("mountPath"))
        .collect();
    assert_eq!(
        mounts,
        BTreeSet::from(["/sys/kernel/tracing", "/var/lib/memtrace", "/tmp"]),
        "{what}: mounts"
    );
    c
}

#[test]
fn agent_daemonsets_have_the_expected_shape() {
    let tool = tool();

    let base = load_yaml(tool, &deploy_dir().join(BASE_MANIFEST));
    let kinds: Vec<&str> = base.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Namespace", "ServiceAccount", "Service"],
        "{BASE_MANIFEST}: resources"
    );
    let docs = load_yaml(tool, &deploy_dir().join(MANIFEST));
    assert_eq!(docs.len(), 1, "{MANIFEST}: just the DaemonSet");
    assert!(
        !has_privileged_true(&Value::Array(docs.clone())),
        "{MANIFEST} must not be privileged"
    );

    let sa = find(&base, "ServiceAccount", "memtrace");
    assert_eq!(sa["automountServiceAccountToken"], false);

    let ds = find(&docs, "DaemonSet", "memtrace-agent");
    let c = check_agent_daemonset(ds, "memtrace-agent");
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL"])
    );
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        BTreeSet::from(CAPABILITIES),
        "exactly these capabilities"
    );
    assert_eq!(
        sc["capabilities"]["add"].as_array().unwrap().len(),
        CAPABILITIES.len()
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    // The headless Service selects the agent pods (of either variant).
    let svc = find(&base, "Service", "memtrace-agent");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(
        svc["spec"]["ports"][0]["name"], "metrics",
        "Service port name"
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], AGENT_PORT);

    let privileged = load_yaml(tool, &deploy_dir().join(PRIVILEGED_MANIFEST));
    assert_eq!(
        privileged.len(),
        1,
        "{PRIVILEGED_MANIFEST}: just the DaemonSet"
    );
    let pds = find(&privileged, "DaemonSet", "memtrace-agent-privileged");
    let pc = check_agent_daemonset(pds, "memtrace-agent-privileged");
    assert_eq!(pc["securityContext"]["privileged"], true);
    assert!(
        pc["securityContext"]["capabilities"].is_null(),
        "the privileged variant has every capability already"
    );

    for (ds, pod) in [(ds, "memtrace-agent"), (pds, "memtrace-agent-privileged")] {
        let labels = &ds["spec"]["template"]["metadata"]["labels"];
        for (key, value) in svc["spec"]["selector"].as_object().expect("selector") {
            assert_eq!(&labels[key], value, "Service selects {pod} pods ({key})");
        }
    }
    // The two DaemonSets must not adopt each other's pods.
    assert_ne!(
        ds["spec"]["selector"], pds["spec"]["selector"],
        "the variants' selectors must differ"
    );

    // No Secret is shipped (the token is created by the operator).
    for file in manifests() {
        for doc in load_yaml(tool, &deploy_dir().join(&file)) {
            assert_ne!(doc["kind"], "Secret", "{file} must not define a Secret");
        }
    }
}

/// memtrace with only `caps` (as `setpriv` names them: `+bpf,...`) traces a
/// leaking process: Ok(report text) or Err(what memtrace said).
fn trace_with_caps(caps: &[&str]) -> Result<String, String> {
    let exe = compile_c("agent_mix");
    let leak = Workload::spawn_ready(&exe, &["leak", "256"]);
    let dir = scratch_dir("caps");
    let out = dir.join("report.json");
    let bounding: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_ascii_lowercase()))
        .collect();
    let run = Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .arg("--inh-caps=-all")
        .arg("--")
        .arg(memtrace_bin())
        .args(["--pid", &leak.pid().to_string()])
        .args(["--duration", "2s", "--interval", "1s", "--no-live", "-o"])
        .arg(&out)
        .output()
        .expect("setpriv (util-linux)");
    let result = match run.status.success() {
        true => Ok(std::fs::read_to_string(&out).expect("the report")),
        false => Err(String::from_utf8_lossy(&run.stderr).into_owned()),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

#[test]
fn the_manifest_capabilities_suffice_and_sys_admin_is_needed() {
    let docs = load_yaml(tool(), &deploy_dir().join(MANIFEST));
    let ds = find(&docs, "DaemonSet", "memtrace-agent");
    let c = check_agent_daemonset(ds, "memtrace-agent");
    let caps: Vec<&str> = strings(&c["securityContext"]["capabilities"]["add"])
        .into_iter()
        .collect();
    let report = trace_with_caps(&caps).unwrap_or_else(|e| {
        panic!("memtrace fails with the manifest's capabilities {caps:?}:\n{e}")
    });
    let report = Report::parse(&report, "capabilities").expect("a valid report");
    assert_eq!(
        report.stacks[0].function(),
        Some("append_audit_record"),
        "with {caps:?}"
    );
    // Without SYS_ADMIN the kernel refuses the uprobes (this is why the
    // manifest has it).
    let without: Vec<&str> = caps.into_iter().filter(|c| *c != "SYS_ADMIN").collect();
    let error = trace_with_caps(&without).expect_err("uprobes need CAP_SYS_ADMIN");
    assert!(
        error.contains("perf_event_open") && error.contains("Permission denied"),
        "{error}"
    );
}

fn rules_dir() -> PathBuf {
    deploy_dir().join("prometheus")
}

const RULES: &str = "memtrace-rules.yaml";
const RULES_TEST: &str = "memtrace-rules.test.yaml";

/// `promtool ARGS...` in `dir`: Ok(stdout) or Err(everything it said).
fn promtool(dir: &Path, args: &[&str]) -> Result<String, String> {
    run_ok(Command::new("promtool").current_dir(dir).args(args))
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The values of `key: VALUE` lines (after `- ` or indentation) of a YAML
/// file, in order.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix(key)?
                .strip_prefix(": ")
                .map(|v| v.trim().to_owned())
        })
        .collect()
}

#[test]
fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = rules_dir();
    let rules = std::fs::read_to_string(dir.join(RULES)).expect("deploy/prometheus rules");
    let alerts: BTreeSet<String> = yaml_values(&rules, "alert").into_iter().collect();
    assert_eq!(
        alerts,
        BTreeSet::from(
            [
                "MemtraceOOMKill",
                "MemtraceOOMWatchDown",
                "MemtraceProcessMemoryGrowing",
                "MemtraceTracesFailing"
            ]
            .map(String::from)
        ),
        "the alerts shipped"
    );
    let checked = promtool(&dir, &["check", "rules", RULES]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );
    // Every alert has a unit test that expects it to fire.
    let tests = std::fs::read_to_string(dir.join(RULES_TEST)).expect("the rules' unit tests");
    let tested: BTreeSet<String> = yaml_values(&tests, "alertname").into_iter().collect();
    assert_eq!(tested, alerts, "alerts without a unit test");
    assert!(
        tests.matches("exp_labels:").count() >= alerts.len(),
        "each alert is expected to fire somewhere"
    );
    let out = promtool(&dir, &["test", "rules", RULES_TEST]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The samples of a Prometheus text exposition: (series as written, value).
fn samples(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.to_owned())
        })
        .collect()
}

/// The metric names a PromQL expression names (`memtrace_...`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("memtrace_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// A metric's value in an exposition (the first series of that name and
/// labels prefix).
fn sample_value(exposition: &str, prefix: &str) -> Option<f64> {
    samples(exposition)
        .into_iter()
        .find(|(series, _)| series.starts_with(prefix))
        .and_then(|(_, value)| value.parse().ok())
}

#[test]
fn prometheus_rules_fire_on_a_real_agents_metrics() {
    let dir = scratch_dir("rules");
    // A leak of its own name, so only it is watched.
    let exe = dir.join("rules_leak");
    std::fs::copy(compile_c("agent_mix"), &exe).unwrap();
    let leak = Workload::spawn_ready(&exe, &["leak", "1024"]);
    let addr = format!("127.0.0.1:{}", http::free_port());
    let mut agent = Tracer::spawn(
        &[
            "agent",
            "--listen",
            &addr,
            "--reports-dir",
            dir.join("reports").to_str().unwrap(),
            "--scan-interval",
            "1s",
            "--min-observation",
            "2s",
            "--trace-window",
            "2s",
            "--comm",
            "rules_leak",
        ]
        .map(std::ffi::OsString::from),
    );
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    // Until a trace has finished: every family the rules use is exported.
    let deadline = std::time::Instant::now() + secs(60);
    let exposition = loop {
        let m = http::request(addr, "GET", "/metrics", None).map(|r| r.text());
        if let Some(m) = m.filter(|m| {
            sample_value(
                m,
                "memtrace_agent_traces_total{reason=\"growth\",result=\"ok\"}",
            )
            .is_some()
                && sample_value(m, "memtrace_agent_oom_watch_up") == Some(1.0)
        }) {
            break m;
        }
        assert!(agent.is_running(), "agent exited\n{}", agent.snapshot());
        assert!(
            std::time::Instant::now() < deadline,
            "no finished trace in 60 s\n{}",
            agent.snapshot()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) };
    agent.finish(secs(60)).assert_success();

    // Every metric a rule names is one the agent exports.
    let rules = std::fs::read_to_string(rules_dir().join(RULES)).unwrap();
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .map(String::from)
        .collect();
    let used = metric_names(&rules);
    assert!(used.len() >= 4, "{used:?}");
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the rules use metrics the agent does not export: {unknown:?}\n{exposition}"
    );

    // These very samples, held for an hour: the growth alert fires for the
    // leak, with its labels, and nothing else does.
    let pid = leak.pid().to_string();
    let leaking = samples(&exposition)
        .into_iter()
        .find(|(s, _)| {
            s.starts_with("memtrace_process_anon_growth_bytes_per_hour{")
                && s.contains(&format!("pid=\"{pid}\""))
        })
        .unwrap_or_else(|| panic!("no growth series for pid {pid}\n{exposition}"));
    let rate: f64 = leaking.1.parse().unwrap();
    assert!(rate > 1e9, "the leak's growth is 3.5 GiB/h: {leaking:?}");
    let mut test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    \
         input_series:\n",
        rules_dir().join(RULES).display()
    );
    // As scraped: with the target's instance label.
    const INSTANCE: &str = "node-x:9464";
    for (series, value) in samples(&exposition) {
        let series = match series.split_once('{') {
            Some((name, labels)) => format!("{name}{{instance=\"{INSTANCE}\",{labels}"),
            None => format!("{series}{{instance=\"{INSTANCE}\"}}"),
        };
        test.push_str(&format!(
            "      - series: '{series}'\n        values: '{value}x60'\n"
        ));
    }
    test.push_str(&format!(
        "    alert_rule_test:\n      - eval_time: 30m\n        alertname: \
         MemtraceProcessMemoryGrowing\n        exp_alerts:\n          - exp_labels:\n              \
         severity: warning\n              instance: {INSTANCE}\n              pid: \"{pid}\"\n              \
         comm: rules_leak\n            \
         exp_annotations:\n              summary: \"rules_leak (pid {pid}) keeps growing: \
         {growth}B/h of anonymous memory\"\n              description: \"The anonymous memory of \
         rules_leak (pid {pid}) on {INSTANCE} has grown {growth}B/h for 15 minutes. The memtrace agent \
         traces such a process; its incident (top allocation stacks, flamegraph) is listed at \
         /reports on that agent.\"\n",
        growth = humanize1024(rate),
    ));
    for quiet in [
        "MemtraceOOMKill",
        "MemtraceTracesFailing",
        "MemtraceOOMWatchDown",
    ] {
        test.push_str(&format!(
            "      - eval_time: 30m\n        alertname: {quiet}\n        exp_alerts: []\n"
        ));
    }
    let file = dir.join("real.test.yaml");
    std::fs::write(&file, &test).unwrap();
    if let Err(e) = promtool(&dir, &["test", "rules", file.to_str().unwrap()]) {
        panic!("{e}\n--- {} ---\n{test}", file.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Prometheus' `humanize1024` template function: the value scaled by 1024
/// until below it, with 4 significant digits and Ki, Mi, Gi... (Go's `%.4g`).
fn humanize1024(mut v: f64) -> String {
    let prefixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"];
    let mut i = 0;
    while v.abs() >= 1024.0 && i + 1 < prefixes.len() {
        v /= 1024.0;
        i += 1;
    }
    // %.4g: 4 significant digits, trailing zeros dropped.
    let digits = 3 - v.abs().log10().floor().max(0.0) as i32;
    let text = format!("{v:.*}", digits.max(0) as usize);
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text,
    };
    format!("{text}{}", prefixes[i])
}
