//! Object storage against a real S3-compatible server (moto, started by `services`): Spark output
//! read from S3 exactly as from disk, a pipeline trained from S3 writing its predictions back,
//! `_SUCCESS` waiting, retries of transient 500s, and the errors of a missing bucket or a wrong
//! credential.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use millrace::connectors::parquet::{DatasetOptions, ParquetDataset};
use millrace::connectors::storage::StorageOptions;

use crate::common::{pipeline_toml, scratch, tabular};
use crate::services::{S3, s3, start_moto};
use crate::spark::{VARIANTS, check_against_spark, fixture};

fn with_storage(storage: StorageOptions) -> DatasetOptions {
    DatasetOptions {
        storage,
        ..DatasetOptions::default()
    }
}

/// Uploads a local directory to `s3://bucket/prefix` with `millrace cp`'s copy.
fn upload(server: &S3, local: &std::path::Path, bucket: &str, prefix: &str) -> String {
    server.create_bucket(bucket);
    let url = format!("s3://{bucket}/{prefix}");
    let report =
        millrace::inspect::copy(&local.to_string_lossy(), &url, &server.options()).unwrap();
    assert!(report.objects > 0);
    url
}

#[test]
fn spark_output_reads_the_same_from_s3_as_from_disk() {
    let Some(server) = s3() else { return };
    for variant in VARIANTS {
        let url = upload(server, &fixture(variant), "spark", variant);
        check_against_spark(&url, &with_storage(server.options()), variant);
    }
}

#[test]
fn pipeline_trains_from_s3_and_writes_partitioned_predictions_back() {
    let Some(server) = s3() else { return };
    let (train, holdout) = tabular();
    let train_url = upload(server, train, "lake", "tabular/train");
    let holdout_url = upload(server, holdout, "lake", "tabular/holdout");
    server.create_bucket("results");
    // The shared tabular pipeline, plus outputs and the server's [storage] section.
    let pipeline = |ingest: &str, eval: &str, out: &str| {
        format!(
            r#"{}
[output]
predictions = "{out}"
columns = ["cat", "ts"]
partition_by = ["cat"]
evaluation = "{out}-eval"

{}"#,
            pipeline_toml(std::path::Path::new(ingest), std::path::Path::new(eval), 1),
            server.toml()
        )
    };
    let dir = scratch("s3-pipeline");
    let from_s3 = crate::quickstart::run_toml(
        &pipeline(&train_url, &holdout_url, "s3://results/preds"),
        2,
        &dir.join("s3"),
    );
    let local_out = dir.join("local-preds");
    let from_disk = crate::quickstart::run_toml(
        &pipeline(
            &train.to_string_lossy(),
            &holdout.to_string_lossy(),
            &local_out.to_string_lossy(),
        ),
        2,
        &dir.join("local"),
    );
    // The same bytes give the same model, wherever they are stored.
    assert_eq!(from_s3.parameter_checksum, from_disk.parameter_checksum);
    assert_eq!(from_s3.rows_read, 60_000);
    assert!(from_s3.predictions_written > 0);
    assert_eq!(from_s3.predictions_written, from_s3.eval_rows);

    // Spark-style output: partition directories, _SUCCESS, readable back with its columns.
    let preds =
        ParquetDataset::open_with("s3://results/preds", &with_storage(server.options())).unwrap();
    assert_eq!(preds.num_rows(), from_s3.predictions_written);
    assert_eq!(preds.partition_columns(), vec!["cat"]);
    assert!(
        preds
            .files()
            .iter()
            .all(|f| f.path.to_string_lossy().contains("/preds/cat="))
    );
    let names: Vec<String> = preds
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["ts", "label", "prediction", "probability", "cat"]);
    let local = ParquetDataset::open_path(&local_out).unwrap();
    assert_eq!(local.num_rows(), preds.num_rows());
    let success = millrace::connectors::storage::StorageLocation::parse(
        "s3://results/preds/_SUCCESS",
        &server.options(),
    )
    .unwrap();
    let head = millrace::connectors::runtime::block_on(async {
        use object_store::ObjectStoreExt;
        success.store.head(&success.root).await
    });
    assert!(head.is_ok(), "no _SUCCESS: {head:?}");
    let eval =
        ParquetDataset::open_with("s3://results/preds-eval", &with_storage(server.options()))
            .unwrap();
    assert_eq!(
        eval.num_rows(),
        1,
        "one evaluation at the end of the only epoch"
    );

    // mode = "error" refuses to write into existing output before any work starts.
    let started = Instant::now();
    let err = crate::quickstart::try_run_toml(
        &pipeline(&train_url, &holdout_url, "s3://results/preds"),
        1,
        &dir.join("again"),
    )
    .unwrap_err();
    assert!(
        err.contains("already holds data") && err.contains("s3://results/preds"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn transient_server_errors_are_retried() {
    let Some(server) = s3() else { return };
    let url = upload(server, &fixture("etl_int_partition"), "retry", "etl");
    let upstream = server.endpoint.trim_start_matches("http://").to_string();
    let proxy = crate::faulty_proxy::start(upstream, 3);
    let storage = StorageOptions {
        endpoint: Some(proxy.endpoint.clone()),
        ..server.options()
    };
    check_against_spark(&url, &with_storage(storage), "etl_int_partition");
    assert_eq!(
        proxy.failed.load(Ordering::SeqCst),
        3,
        "three requests failed with 500"
    );
    assert!(proxy.forwarded.load(Ordering::SeqCst) > 0);
}

#[test]
fn missing_bucket_fails_fast_naming_the_url() {
    let Some(server) = s3() else { return };
    let started = Instant::now();
    let err = ParquetDataset::open_with(
        "s3://no-such-bucket/etl/out",
        &with_storage(server.options()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("s3://no-such-bucket/etl/out"), "{err}");
    assert!(
        err.contains("does not exist") || err.contains("NoSuchBucket"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn wrong_credentials_are_refused_with_a_clear_error() {
    if s3().is_none() {
        return;
    }
    // A second server that checks credentials (moto's IAM-backed auth): unknown keys are refused.
    let endpoint = start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).unwrap();
    let storage = StorageOptions {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some("AKIAWRONGWRONGWRONG0".into()),
        secret_access_key: Some("wrong".into()),
        max_retries: Some(2),
        ..StorageOptions::default()
    };
    let started = Instant::now();
    let err = ParquetDataset::open_with("s3://locked/data", &with_storage(storage))
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://locked/data"), "{err}");
    assert!(
        err.contains("access was denied") || err.contains("credentials"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn wait_for_success_blocks_until_the_writer_finishes() {
    let Some(server) = s3() else { return };
    let staged = scratch("s3-success").join("etl");
    crate::spark::copy_dir(&fixture("etl_int_partition"), &staged);
    std::fs::remove_file(staged.join("_SUCCESS")).unwrap();
    let url = upload(server, &staged, "landing", "etl");
    let options = DatasetOptions {
        wait_for_success: Some(Duration::from_millis(600)),
        ..with_storage(server.options())
    };
    let err = ParquetDataset::open_with(&url, &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("_SUCCESS") && err.contains("s3://landing/etl/_SUCCESS"),
        "{err}"
    );

    // The "Spark job" finishes while we wait.
    let writer_options = server.options();
    let marker_dir = scratch("s3-success-marker").join("m");
    std::fs::create_dir_all(&marker_dir).unwrap();
    std::fs::write(marker_dir.join("_SUCCESS"), b"").unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        millrace::inspect::copy(
            &marker_dir.to_string_lossy(),
            "s3://landing/etl",
            &writer_options,
        )
        .unwrap();
    });
    let started = Instant::now();
    let options = DatasetOptions {
        wait_for_success: Some(Duration::from_secs(30)),
        ..with_storage(server.options())
    };
    let dataset = ParquetDataset::open_with(&url, &options).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1400));
    writer.join().unwrap();
    assert_eq!(
        dataset.num_rows(),
        crate::spark::expected("etl_int_partition")["rows"]
            .as_u64()
            .unwrap()
    );
}

#[test]
fn inspect_cli_reads_an_s3_prefix() {
    let Some(server) = s3() else { return };
    let url = upload(server, &fixture("etl_int96_legacy"), "cli", "etl");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["inspect", &url, "--json", "--endpoint", &server.endpoint])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let want = crate::spark::expected("etl_int96_legacy");
    assert_eq!(report["stats"]["rows"], want["rows"]);
    assert_eq!(
        report["partition_columns"],
        serde_json::json!(["event_date", "region"])
    );
    let ts = report["stats"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "event_ts")
        .unwrap();
    // INT96 written with the legacy calendar, rebased as Spark reads it.
    assert_eq!(ts["min"], want["columns"]["event_ts"]["min"]);
}

#[test]
fn aws_profile_supplies_endpoint_and_credentials() {
    let Some(server) = s3() else { return };
    let url = upload(server, &fixture("etl_int_partition"), "profiled", "etl");
    let dir = scratch("aws-profile");
    std::fs::write(
        dir.join("config"),
        format!(
            "[default]\nregion = eu-west-1\n\n[profile etl]\nregion = us-east-1\nendpoint_url = {}\n",
            server.endpoint
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("credentials"),
        "[etl]\naws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    let inspect = |profile: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args(["inspect", &url, "--json", "--profile", profile])
            .env("AWS_CONFIG_FILE", dir.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_ENDPOINT")
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    };
    let output = inspect("etl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["stats"]["rows"],
        crate::spark::expected("etl_int_partition")["rows"]
    );
    let missing = inspect("nope");
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("profile `nope`"), "{err}");
}
