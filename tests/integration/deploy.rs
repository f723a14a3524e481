//! The container and Kubernetes manifests of `deploy/` agree with each other and with the CLI:
//! the Services the pods' DNS names need exist, the process count matches the pod count, the
//! host list the pods resolve names each pod at its own index, the pipeline parses.
//!
//! No image is built and nothing runs on a cluster here: these are static checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use millrace::cluster::{resolve_hosts, resolve_process_id};
use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document of `deploy/k8s/*.yaml`, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let dir = deploy_dir().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected the k8s manifests in {dir:?}");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    docs
}

/// The one document of `kind` named `name`.
fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| {
            d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} named {name}");
    found[0]
}

/// The only document of `kind`.
fn only<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

fn u64_of(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v:?}"))
}

/// The args of the pod template's single container.
fn container_args(workload: &Value) -> Vec<String> {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    containers[0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| str_of(a, "an arg").to_string())
        .collect()
}

/// The value following `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    args.get(at + 1)
        .unwrap_or_else(|| panic!("{flag} has no value in {args:?}"))
}

/// The port of a `host:port` entry.
fn port_of(host: &str) -> u64 {
    host.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Checks that `name` is a headless Service selecting the pods of `workload` on `port`.
fn check_headless_service(docs: &[(String, Value)], name: &str, workload: &Value, port: u64) {
    let service = find(docs, "Service", name);
    let spec = &service["spec"];
    assert_eq!(
        spec["clusterIP"].as_str(),
        Some("None"),
        "{name} is not headless"
    );
    assert_eq!(spec["publishNotReadyAddresses"].as_bool(), Some(true));
    let ports: Vec<u64> = spec["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| u64_of(&p["port"], "a Service port"))
        .collect();
    assert!(ports.contains(&port), "{name} ports {ports:?} lack {port}");
    let labels: BTreeMap<String, String> =
        serde_yaml_ng::from_value(workload["spec"]["template"]["metadata"]["labels"].clone())
            .unwrap();
    let selector: BTreeMap<String, String> =
        serde_yaml_ng::from_value(spec["selector"].clone()).unwrap();
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "Service {name} selects {k}={v}, which the pods lack"
        );
    }
    let container_ports: Vec<u64> = workload["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| u64_of(&p["containerPort"], "a containerPort"))
        .collect();
    assert!(container_ports.contains(&port));
}

fn env_with(key: &'static str, value: &'static str) -> impl Fn(&str) -> Option<String> {
    move |k| (k == key).then(|| value.to_string())
}

#[test]
fn statefulset_pods_find_each_other() {
    let docs = manifests();
    let set = only(&docs, "StatefulSet");
    let set_name = str_of(&set["metadata"]["name"], "metadata.name");
    let service = str_of(&set["spec"]["serviceName"], "serviceName");
    let replicas = u64_of(&set["spec"]["replicas"], "replicas") as usize;
    assert_eq!(
        set["spec"]["podManagementPolicy"].as_str(),
        Some("Parallel")
    );

    let args = container_args(set);
    assert_eq!(args[0], "run");
    assert_eq!(flag(&args, "--process-id"), "auto");
    assert!(args.iter().any(|a| a == "--resume"), "{args:?}");
    let processes: usize = flag(&args, "--processes").parse().unwrap();
    assert_eq!(replicas, processes);
    assert_eq!(processes, 4);

    let pattern = flag(&args, "--hosts");
    let hosts = resolve_hosts(pattern, replicas).unwrap();
    assert_eq!(
        hosts,
        [
            "millrace-0.millrace-workers:2101",
            "millrace-1.millrace-workers:2101",
            "millrace-2.millrace-workers:2101",
            "millrace-3.millrace-workers:2101",
        ]
    );
    let port = port_of(&hosts[0]);
    check_headless_service(&docs, service, set, port);
    for (i, host) in hosts.iter().enumerate() {
        // A StatefulSet pod is <name>-<ordinal>.<serviceName> in DNS, its HOSTNAME <name>-<ordinal>.
        let pod = format!("{set_name}-{i}");
        assert_eq!(*host, format!("{pod}.{service}:{port}"));
        let env = move |k: &str| (k == "HOSTNAME").then(|| pod.clone());
        assert_eq!(resolve_process_id("auto", processes, &env).unwrap(), i);
    }
    assert_eq!(
        resolve_process_id("auto", 4, &env_with("HOSTNAME", "millrace-2")).unwrap(),
        2
    );
    check_pipeline_mount(set);
}

#[test]
fn indexed_job_pods_find_each_other() {
    let docs = manifests();
    let job = only(&docs, "Job");
    let job_name = str_of(&job["metadata"]["name"], "metadata.name");
    assert_eq!(job_name, "millrace-train");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = u64_of(&spec["completions"], "completions") as usize;
    let parallelism = u64_of(&spec["parallelism"], "parallelism") as usize;
    assert!(u64_of(&spec["backoffLimit"], "backoffLimit") > 0);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    let subdomain = str_of(&pod["subdomain"], "subdomain");

    let args = container_args(job);
    assert_eq!(flag(&args, "--process-id"), "auto");
    assert!(args.iter().any(|a| a == "--resume"), "{args:?}");
    let processes: usize = flag(&args, "--processes").parse().unwrap();
    assert_eq!(completions, processes);
    assert_eq!(parallelism, processes);

    let hosts = resolve_hosts(flag(&args, "--hosts"), processes).unwrap();
    let port = port_of(&hosts[0]);
    check_headless_service(&docs, subdomain, job, port);
    let expected: Vec<String> = (0..processes)
        .map(|i| format!("{job_name}-{i}.{subdomain}:{port}"))
        .collect();
    assert_eq!(hosts, expected);
    assert_eq!(hosts[3], "millrace-train-3.millrace-job:2101");
    assert_eq!(
        resolve_process_id("auto", 4, &env_with("JOB_COMPLETION_INDEX", "3")).unwrap(),
        3
    );
    check_pipeline_mount(job);
}

/// The workload mounts the ConfigMap at /config and runs /config/pipeline.toml from it.
fn check_pipeline_mount(workload: &Value) {
    let pod = &workload["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("millrace-pipeline"))
        .expect("a volume from the ConfigMap millrace-pipeline");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume mounted");
    assert_eq!(mount["mountPath"].as_str(), Some("/config"));
    assert_eq!(container_args(workload)[1], "/config/pipeline.toml");
}

#[test]
fn configmap_pipeline_parses_and_uses_the_object_store() {
    let docs = manifests();
    let map = find(&docs, "ConfigMap", "millrace-pipeline");
    let text = str_of(&map["data"]["pipeline.toml"], "data.pipeline.toml");
    let spec = millrace::pipeline_file::parse(text, Path::new("configmap.yaml:pipeline.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    spec.validate().unwrap();
    assert!(spec.ingest.path.to_string_lossy().starts_with("s3://"));
    let holdout = spec.evaluate.path.as_ref().unwrap();
    assert!(holdout.to_string_lossy().starts_with("s3://"));
    let checkpoint = spec.checkpoint.as_ref().expect("a [checkpoint] section");
    assert_eq!(
        checkpoint.location(&spec.name),
        "s3://millrace-data/checkpoints/tabular"
    );
    assert_eq!(checkpoint.keep, 3);
    assert_eq!(
        spec.output.mode,
        millrace::operators::spec::OutputMode::Overwrite
    );
}

#[test]
fn dockerfile_builds_locked_and_runs_millrace() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (builder, runtime) = (stages[0], stages[1]);
    assert!(builder.starts_with("rust:1.94-bookworm AS builder"));
    assert!(builder.contains("cargo build --release --locked --bin millrace"));
    assert!(runtime.starts_with("debian:bookworm-slim"));
    assert!(runtime.contains("COPY --from=builder /out/millrace /usr/local/bin/millrace"));
    let entrypoint: Vec<&str> = runtime
        .lines()
        .filter(|l| l.starts_with("ENTRYPOINT"))
        .collect();
    assert_eq!(entrypoint, [r#"ENTRYPOINT ["millrace"]"#]);
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap();
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    // The uid the manifests' runAsUser names.
    assert!(user.starts_with("10001"));
}
