//! The dashboard in a real headless browser (Debian's `chromium`, installed by .ci/run): every page
//! loads, the numbers it shows are those of summary.json, metrics.jsonl, dead_letters.jsonl and the
//! server's /metrics, a running job's chart advances, strings from data stay text, and the data
//! needs the server's token. Screenshots of every page are kept in target/test-artifacts/ui/.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use millrace::operators::serve::ServeOptions;
use millrace::operators::ui::{RunsSource, UiSource, serve_ui};
use serde_json::{Value, json};

use crate::common::{pipeline_toml, scratch, succeed, tabular};
use crate::quickstart::run_toml;
use crate::serve_harness::{Server, fixture, get, one_model, post_json, request, v2_request};

/// The browser, or `None` (after a loud message) outside CI when there is none.
fn browser() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    match found {
        Some(b) => Some(b),
        None if millrace::connectors::env::in_ci() => {
            panic!("CI is set but there is no headless browser: apt-get install chromium")
        }
        None => {
            eprintln!(
                "\n!!! SKIPPING DASHBOARD TESTS: no chromium. `apt-get install chromium` to run them.\n"
            );
            None
        }
    }
}

fn headless(browser: &str) -> Command {
    let mut command = Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--virtual-time-budget=4000",
    ]);
    command
}

/// The page at `url` as the browser shows it once its scripts have run.
fn dom(browser: &str, url: &str) -> String {
    let out = succeed(headless(browser).arg("--dump-dom").arg(url));
    String::from_utf8(out.stdout).unwrap()
}

/// A screenshot of `url`, kept as a test artifact.
fn screenshot(browser: &str, url: &str, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/ui");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    succeed(
        headless(browser)
            .arg("--window-size=1280,1600")
            .arg(format!("--screenshot={}", file.display()))
            .arg(url),
    );
    assert!(
        std::fs::metadata(&file).unwrap().len() > 10_000,
        "{}",
        file.display()
    );
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `data-value`s of the elements with `data-key="key"` inside the first element whose
/// opening tag holds `scope` (the whole page when `scope` is empty), in page order.
fn values(dom: &str, scope: &str, key: &str) -> Vec<String> {
    let start = if scope.is_empty() {
        0
    } else {
        dom.find(scope)
            .unwrap_or_else(|| panic!("no {scope} in the page"))
    };
    let part = &dom[start..];
    let part = match part.find("</tr>") {
        Some(end) if !scope.is_empty() && scope.starts_with("<tr") => &part[..end],
        _ => part,
    };
    let needle = format!("data-key=\"{key}\" data-value=\"");
    let mut out = Vec::new();
    let mut rest = part;
    while let Some(at) = rest.find(&needle) {
        let after = &rest[at + needle.len()..];
        let end = after.find('"').unwrap();
        out.push(unescape(&after[..end]));
        rest = &after[end..];
    }
    out
}

fn value(dom: &str, scope: &str, key: &str) -> String {
    values(dom, scope, key)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {key} in {scope}"))
}

fn number(text: &str) -> f64 {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number: {text}"))
}

/// The number of points a chart shows.
fn points(dom: &str, chart: &str) -> usize {
    let needle = format!("data-chart=\"{chart}\" data-points=\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no chart {chart}"))
        + needle.len();
    dom[at..at + dom[at..].find('"').unwrap()].parse().unwrap()
}

fn lines(path: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| kind.is_empty() || v["kind"] == kind)
        .collect()
}

/// Serves the dashboard over `root` on a free port, for as long as the test runs.
fn dashboard(root: &Path) -> SocketAddr {
    let source = UiSource {
        runs: Some(RunsSource::new(root)),
        server: false,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(serve_ui(
                source,
                "127.0.0.1:0".parse().unwrap(),
                move |bound| tx.send(bound).unwrap(),
                std::future::pending(),
            ))
            .unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

const HOSTILE: &str = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">";

#[test]
fn dashboard_shows_finished_runs_as_their_files_say() {
    let Some(browser) = browser() else { return };
    let root = scratch("ui-runs");
    let _ = std::fs::remove_dir_all(&root);
    let (train, holdout) = tabular();
    let summary = run_toml(&pipeline_toml(train, holdout, 1), 2, &root);
    let run = root.join("run");
    // A dead letter whose reason and record are markup, and a run whose name is.
    let letter = json!({"operator": "preprocess/sql", "reason": HOSTILE, "origin": "x.parquet", "record": "<script>document.body.setAttribute('data-pwned','2')</script>", "rows": 1});
    let mut dead = std::fs::read_to_string(run.join("dead_letters.jsonl")).unwrap_or_default();
    dead.push_str(&format!("{letter}\n"));
    std::fs::write(run.join("dead_letters.jsonl"), &dead).unwrap();
    let odd = root.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(
        odd.join("pipeline.toml"),
        format!("name = {}\n", json!(HOSTILE)),
    )
    .unwrap();

    let addr = dashboard(&root);
    let base = format!("http://{addr}");
    let page = dom(browser, &format!("{base}/ui"));
    let row = "<tr data-run=\"run\"";
    assert_eq!(value(&page, row, "status"), "finished");
    assert_eq!(
        number(&value(&page, row, "rows_read")),
        summary.rows_read as f64
    );
    assert_eq!(
        number(&value(&page, row, "rows_per_s")),
        summary.e2e_rows_per_s
    );
    assert_eq!(number(&value(&page, row, "wall_s")), summary.wall_s);
    assert_eq!(value(&page, "<tr data-run=\"odd\"", "name"), HOSTILE);
    assert!(!page.contains("data-pwned=\""), "markup from data ran");
    screenshot(browser, &format!("{base}/ui"), "runs");

    let page = dom(browser, &format!("{base}/ui/runs/run"));
    let on_file = serde_json::to_value(&summary).unwrap();
    for key in [
        "rows_read",
        "train_rows",
        "steps",
        "rows_trained",
        "eval_rows",
    ] {
        assert_eq!(
            number(&value(&page, "id=\"summary\"", key)),
            on_file[key].as_f64().unwrap(),
            "{key}"
        );
    }
    assert_eq!(
        number(&value(&page, "id=\"summary\"", "final_loss")),
        summary.final_loss
    );
    let metrics = run.join("metrics.jsonl");
    let trained = lines(&metrics, "train");
    assert_eq!(points(&page, "loss"), trained.len());
    // Rows per second between training lines: each line's rows over the time since the last.
    assert_eq!(points(&page, "throughput"), trained.len());
    let shown = get(addr, "/ui/api/runs/run").json()["throughput"].clone();
    let mut since = 0.0;
    for (line, point) in trained.iter().zip(shown.as_array().unwrap()) {
        let at = line["elapsed_s"].as_f64().unwrap();
        let expect = line["rows"].as_f64().unwrap() / (at - since);
        assert_eq!(point[0], line["step"]);
        assert!(
            (point[1].as_f64().unwrap() - expect).abs() <= 1e-9 * expect,
            "{point} vs {expect}"
        );
        since = at;
    }
    let evals = lines(&metrics, "eval");
    let per_eval = evals[0]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| v.is_number() && !["step", "epoch", "rows"].contains(&k.as_str()))
        .count();
    assert_eq!(points(&page, "eval"), evals.len() * per_eval);
    for op in on_file["operators"].as_array().unwrap() {
        let name = op["operator"].as_str().unwrap();
        let scope = format!("<tr data-operator=\"{name}\"");
        assert_eq!(
            number(&value(&page, &scope, "rows_out")),
            op["rows_out"].as_f64().unwrap(),
            "{name}"
        );
    }
    let total = dead.lines().count();
    assert!(page.contains(&format!("id=\"dead-total\" data-value=\"{total}\"")));
    assert!(
        page.contains("&lt;img src=x onerror="),
        "the reason is shown as text"
    );
    assert!(
        page.contains("&lt;script&gt;"),
        "the record is shown as text"
    );
    assert!(!page.contains("data-pwned=\"") && !page.contains("<script>document"));
    screenshot(browser, &format!("{base}/ui/runs/run"), "run");

    // A run's files, and nothing outside it.
    assert_eq!(get(addr, "/ui/api/runs/run/files/summary.json").status, 200);
    assert_eq!(
        get(addr, "/ui/api/runs/run/files/..%2F..%2Fetc%2Fpasswd").status,
        400
    );
    assert_eq!(get(addr, "/ui/api/runs/nope").status, 404);
}

#[test]
fn dashboard_follows_a_running_job() {
    let Some(browser) = browser() else { return };
    let root = scratch("ui-live");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (train, holdout) = tabular();
    let pipeline = root.join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml(train, holdout, 6)).unwrap();
    let run_dir = root.join("live");
    // Without --ui the run serves its dashboard on a free loopback port and says where.
    let mut job = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .arg("run")
        .arg(&pipeline)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--workers", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(job.stderr.take().unwrap());
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("dashboard on http://") {
                let _ = found.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let addr: SocketAddr = address
        .recv_timeout(Duration::from_secs(60))
        .expect("the run printed no dashboard address")
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback());
    let metrics = run_dir.join("metrics.jsonl");
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !ok() {
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "waited too long for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("training lines", &|| lines(&metrics, "train").len() >= 3);
    let url = format!("http://{addr}/ui/runs/live");
    let first = dom(browser, &url);
    let seen = points(&first, "loss");
    assert!(seen >= 3, "{seen} points");
    assert!(first.contains("id=\"run-status\">running<"));
    // The page polls while the run runs.
    let polls: usize = first
        .split("data-polls=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(polls >= 2, "{polls} polls");
    wait("more training lines", &|| {
        lines(&metrics, "train").len() >= seen + 5
    });
    let later = dom(browser, &url);
    assert!(
        points(&later, "loss") > seen,
        "the chart did not advance past {seen}"
    );
    screenshot(browser, &url, "run-live");
    assert!(job.wait().unwrap().success());
    let done: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert!(done["steps"].as_u64().unwrap() > 0);
}

#[test]
fn server_page_shows_models_and_requests_behind_the_token() {
    let Some(browser) = browser() else { return };
    let token = "ui-secret-token";
    let options = ServeOptions {
        auth_token: Some(token.into()),
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("scored", &fixture().model_dir, &options), options);
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str())];
    let good = v2_request(&fixture().raw, 0..8).to_string();
    for _ in 0..12 {
        let reply = request(
            server.addr,
            "POST",
            "/v2/models/scored/infer",
            &headers,
            good.as_bytes(),
        );
        assert_eq!(reply.status, 200);
    }
    for _ in 0..3 {
        let reply = request(
            server.addr,
            "POST",
            "/v2/models/scored/infer",
            &headers,
            b"{\"inputs\": 1}",
        );
        assert_eq!(reply.status, 400);
    }
    // The pages need no token; the data does.
    assert_eq!(get(server.addr, "/ui/server").status, 200);
    assert_eq!(get(server.addr, "/ui/api/config").status, 401);
    assert_eq!(
        post_json(server.addr, "/v2/models/scored/infer", &json!({})).status,
        401
    );

    let url = format!("http://{}/ui/server#token={token}", server.addr);
    let page = dom(browser, &url);
    assert_eq!(value(&page, "<tr data-model=\"scored\"", "version"), "1");
    let route = "<tr data-route=\"/v2/models/{name}/infer\" data-model=\"scored\"";
    // 12 answered, 3 bad bodies, 1 without the token.
    assert_eq!(number(&value(&page, route, "requests")), 16.0);
    assert_eq!(number(&value(&page, route, "errors")), 4.0);
    assert!(number(&value(&page, route, "mean_ms")) > 0.0);
    let batches = values(&page, "id=\"batches\"", "batches");
    assert!(number(&batches[0]) >= 1.0, "{batches:?}");
    screenshot(browser, &url, "server");
    // Without the token the page says why.
    let denied = dom(browser, &format!("http://{}/ui/server", server.addr));
    assert!(denied.contains("HTTP 401"), "{denied}");
}

#[test]
fn a_streaming_job_serves_its_own_dashboard_while_it_trains() {
    let Some(broker) = crate::services::kafka() else {
        return;
    };
    let Some(browser) = browser() else { return };
    use crate::streaming::{config, counting_pipeline, fill_topic, parse, unique};
    let dir = scratch("ui-stream");
    let _ = std::fs::remove_dir_all(&dir);
    let topic = unique("ui");
    fill_topic(broker, &topic, 2, 5_000, &dir);
    let port = crate::services::free_port();
    let text = format!(
        "{}\n[serve]\naddr = \"127.0.0.1:{port}\"\n",
        counting_pipeline(broker, &topic, &dir.join("checkpoints"), "")
    );
    let run_dir = dir.join("run");
    let mut run_config = config(2, &run_dir);
    run_config.idle_timeout = Some(Duration::from_secs(120));
    let stop = std::sync::Arc::clone(&run_config.stop);
    let spec = parse(&text);
    let job = std::thread::spawn(move || millrace::run::run_stream(spec, None, run_config));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the job did not train and publish"
        );
        assert!(!job.is_finished(), "the job ended early");
        let reply = std::net::TcpStream::connect(addr)
            .ok()
            .map(|_| get(addr, "/ui/api/runs/run"));
        if let Some(reply) = reply.filter(|r| r.status == 200) {
            let run = reply.json();
            if run["versions"].as_array().is_some_and(|v| v.len() >= 2)
                && run["train"].as_array().is_some_and(|t| !t.is_empty())
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{addr}/ui/runs/run");
    let page = dom(browser, &url);
    assert!(
        page.contains("id=\"run-status\">running<"),
        "the job's own run is running"
    );
    assert!(page.contains(">stream run <"), "the kind");
    assert!(page.contains("prequential metrics"));
    assert!(points(&page, "loss") >= 1);
    assert!(page.contains("events trained per second"));
    assert!(points(&page, "throughput") >= 1);
    let versions = page
        .split("id=\"versions\" data-value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert!(versions.split(',').count() >= 2, "{versions}");
    screenshot(browser, &url, "stream-live");
    let server = dom(browser, &format!("http://{addr}/ui/server"));
    assert!(number(&value(&server, "<tr data-model=\"counting\"", "version")) >= 1.0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (summary, _) = job.join().unwrap().unwrap();
    assert_eq!(summary.rows_trained, 5_000);

    // Finished: the numbers shown are summary.json's.
    let addr = dashboard(&dir);
    let page = dom(browser, &format!("http://{addr}/ui/runs/run"));
    assert!(page.contains("id=\"run-status\">finished<"));
    // Freshness: p50 and max of the versions that went live since the line before (on train
    // lines, or on lines of their own once the records were trained), over every worker's
    // records (the broker may give both partitions to one worker): the lines' largest delay is
    // at least the summary's p99, and the chart shows exactly what was logged.
    let fresh: Vec<Value> = lines(&run_dir.join("metrics.jsonl"), "")
        .into_iter()
        .filter(|l| l.get("freshness_ms_max").is_some())
        .collect();
    assert_eq!(points(&page, "freshness"), 2 * fresh.len());
    for line in &fresh {
        assert!(line["freshness_ms_p50"].as_f64() <= line["freshness_ms_max"].as_f64());
    }
    let p99 = summary
        .freshness_ms_p99
        .expect("5,000 records trained and published");
    let logged_max = fresh
        .iter()
        .filter_map(|l| l["freshness_ms_max"].as_f64())
        .fold(f64::NAN, f64::max);
    assert!(
        logged_max >= p99,
        "logged max {logged_max} < p99 {p99}: {fresh:?}"
    );
    assert_eq!(
        number(&value(&page, "id=\"summary\"", "rows_per_s")),
        summary.rows_per_s
    );
    assert_eq!(
        number(&value(&page, "id=\"summary\"", "rows_trained")),
        5_000.0
    );
    assert_eq!(
        number(&value(&page, "id=\"summary\"", "model_versions")),
        summary.model_versions as f64
    );
    if let Some(p99) = summary.freshness_ms_p99 {
        assert_eq!(
            number(&value(&page, "id=\"summary\"", "freshness_ms_p99")),
            p99
        );
    }
}

/// The dashboard's page of the tune run in `root/run`: every trial with its status and final
/// metric as tune.jsonl has them, and each trial's metric at every report in the chart.
pub(super) fn check_tune_page(root: &Path, tune: &millrace::operators::batch_job::TuneSummary) {
    let Some(browser) = browser() else { return };
    let addr = dashboard(root);
    let url = format!("http://{addr}/ui/runs/run");
    let page = dom(browser, &url);
    assert!(page.contains(">tune run <"), "the kind");
    let reports: usize = tune.trials.iter().map(|t| t.history.len()).sum();
    assert_eq!(points(&page, "trials"), reports);
    for trial in &tune.trials {
        let row = format!("<tr data-trial=\"{}\"", trial.trial);
        let status = serde_json::to_value(trial.status).unwrap();
        assert_eq!(value(&page, &row, "status"), status.as_str().unwrap());
        assert_eq!(number(&value(&page, &row, "metric")), trial.metric);
        assert_eq!(number(&value(&page, &row, "reports")), trial.reports as f64);
    }
    screenshot(browser, &url, "tune");
}
