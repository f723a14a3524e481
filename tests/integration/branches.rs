//! `[[branch]]`: several train-steps on one read of the data. The rows are read and encoded once;
//! each branch trains, evaluates and saves its own model; one server serves them all with the
//! in-process answers; a branch whose model needs tensors the preprocessing does not make is an
//! error before any work.

use millrace::connectors::parquet::ParquetDataset;
use millrace::ml::bundle::ModelBundle;
use millrace::operators::serve::{ModelRegistry, ServeOptions};

use crate::common::{pipeline_toml, scratch, tabular};
use crate::quickstart::try_run_toml;
use crate::serve_harness::{
    Server, close, post_json, predict_in_process, probabilities, v2_request,
};

fn with_branch(branch: &str) -> String {
    let (train, holdout) = tabular();
    format!("{}\n{branch}", pipeline_toml(train, holdout, 1))
}

const LOGISTIC: &str = r#"[[branch]]
name = "logistic"
[branch.train]
model = { kind = "logistic" }
optimizer = { kind = "adam" }
lr = 0.01
batch_size = 256
seed = 42
"#;

#[test]
fn two_models_from_one_read_are_trained_evaluated_and_served_together() {
    let dir = scratch("branches");
    let summary = try_run_toml(&with_branch(LOGISTIC), 2, &dir).unwrap();
    let (train, holdout) = tabular();
    let rows = ParquetDataset::open_path(train).unwrap().num_rows();
    // Read once, not once per branch.
    assert_eq!(summary.rows_read, rows, "{summary:?}");
    let accuracy = |eval: &Option<millrace::ml::metrics::EvalMetrics>| {
        serde_json::to_value(eval.as_ref().unwrap()).unwrap()["accuracy"]
            .as_f64()
            .unwrap()
    };
    let mlp = accuracy(&summary.eval);
    assert_eq!(summary.branches.len(), 1);
    let branch = &summary.branches[0];
    assert_eq!(branch.name, "logistic");
    let logistic = accuracy(&branch.eval);
    // The Bayes rule of this data needs interactions a logistic model cannot express.
    assert!(
        logistic > 0.6 && logistic + 0.05 < mlp,
        "logistic {logistic}, mlp {mlp}"
    );
    let branch_dir = dir.join("run/branches/logistic/model");
    assert_eq!(branch.model_path, branch_dir.display().to_string());
    assert_eq!(
        ModelBundle::load(&branch_dir).unwrap().model.kind,
        "logistic"
    );
    let main_dir = dir.join("run/model");
    assert_eq!(ModelBundle::load(&main_dir).unwrap().model.kind, "mlp");

    // One server, both models, each with its in-process answers.
    let options = ServeOptions::default();
    let registry = ModelRegistry::new(options.batching.clone());
    registry.load_dir(Some("main"), &main_dir).unwrap();
    registry.load_dir(Some("logistic"), &branch_dir).unwrap();
    let server = Server::start(registry, options);
    for (name, model_dir) in [("main", &main_dir), ("logistic", &branch_dir)] {
        let (raw, _, expected) = predict_in_process(model_dir, holdout);
        let reply = post_json(
            server.addr,
            &format!("/v2/models/{name}/infer"),
            &v2_request(&raw, 0..50),
        );
        assert_eq!(reply.status, 200, "{name}");
        let got = probabilities(&reply.json());
        assert_eq!(got.len(), 100);
        for (g, w) in got.iter().zip(&expected) {
            assert!(close(*g, *w), "{name}: served {g}, in process {w}");
        }
    }
}

#[test]
fn a_branch_error_names_the_branch_before_work() {
    let text = with_branch(&LOGISTIC.replace(
        r#"model = { kind = "logistic" }"#,
        r#"model = { kind = "embedding_mlp", columns = ["region"] }"#,
    ));
    let dir = scratch("branch-missing-tensor");
    let err = try_run_toml(&text, 1, &dir).unwrap_err();
    assert!(
        err.contains("branch 'logistic'") && err.contains("index:region"),
        "{err}"
    );
    assert!(!dir.join("run/metrics.jsonl").exists());
    let text = format!("{}\n{}", with_branch(LOGISTIC), LOGISTIC);
    let err = try_run_toml(&text, 1, &scratch("branch-twice")).unwrap_err();
    assert!(err.contains("two branches are called 'logistic'"), "{err}");
    // The pipeline is called "it": a branch of that name would be served as the main model.
    let err = try_run_toml(
        &with_branch(&LOGISTIC.replace("name = \"logistic\"", "name = \"it\"")),
        1,
        &scratch("branch-pipeline-name"),
    )
    .unwrap_err();
    assert!(err.contains("has the pipeline's name"), "{err}");
    let text =
        with_branch(&LOGISTIC.replace("[branch.train]", "[branch.train]\ntask = \"regression\""))
            .replace(
                r#"model = { kind = "logistic" }"#,
                r#"model = { kind = "linear" }"#,
            );
    let err = try_run_toml(&text, 1, &scratch("branch-task")).unwrap_err();
    assert!(err.contains("branches share the label"), "{err}");
}

#[test]
fn the_dsl_writes_the_same_branch_as_the_file() {
    use millrace::dsl::{Pipeline, Train};
    let file =
        millrace::pipeline_file::parse(&with_branch(LOGISTIC), std::path::Path::new("t.toml"))
            .unwrap();
    let (train, _) = tabular();
    let dsl = Pipeline::new("it")
        .ingest_parquet(train)
        .label("label")
        .train(Train::mlp([64, 64]))
        .branch(
            "logistic",
            Train::logistic().adam().lr(0.01).batch_size(256).seed(42),
        )
        .build()
        .unwrap();
    assert_eq!(dsl.branch, file.branch);
}

#[test]
fn a_branch_trains_the_model_its_own_run_would_bit_for_bit() {
    // The main [train] with another learning rate, as a branch and as a run of its own.
    let (train, holdout) = tabular();
    let main = pipeline_toml(train, holdout, 1);
    let train_section = &main[main.find("[train]").unwrap()..main.find("[evaluate]").unwrap()];
    let branch = format!(
        "[[branch]]\nname = \"fast\"\n{}",
        train_section
            .replace("[train]", "[branch.train]")
            .replace("lr = 0.002", "lr = 0.006")
    );
    let both = try_run_toml(&format!("{main}\n{branch}"), 2, &scratch("branch-bits")).unwrap();
    let alone = try_run_toml(
        &main.replace("lr = 0.002", "lr = 0.006"),
        2,
        &scratch("branch-bits-alone"),
    )
    .unwrap();
    assert_eq!(
        both.branches[0].parameter_checksum,
        alone.parameter_checksum
    );
    assert_ne!(both.parameter_checksum, alone.parameter_checksum);
}

/// The `ckpt-<step>` folders of a checkpoint directory, oldest first.
fn checkpoints(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ckpt-")
        })
        .collect();
    found.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name["ckpt-".len()..].parse::<u64>().unwrap()
    });
    found
}

#[test]
fn branches_checkpoint_and_resume_to_the_uninterrupted_models_bit_for_bit() {
    let dir = scratch("branch-resume");
    let ckpt = dir.join("ckpt");
    // The branch's rate follows a schedule: a resumed step must apply the rate of its step.
    let branch = LOGISTIC.replace(
        "lr = 0.01\n",
        "lr = 0.01\nlr_schedule = { kind = \"cosine\", warmup_steps = 10 }\n",
    );
    let text = format!(
        "{}\n[checkpoint]\ndir = \"{}\"\nevery_steps = 20\nkeep = 100\n",
        with_branch(&branch),
        ckpt.display()
    );
    let full = try_run_toml(&text, 2, &dir.join("full")).unwrap();
    // The branch has checkpoints of its own, beside the main model's.
    let branch_ckpts = checkpoints(&ckpt.join("branches/logistic"));
    let main_ckpts = checkpoints(&ckpt);
    assert!(branch_ckpts.len() >= 3 && main_ckpts.len() >= 3);
    // As if killed while the branch trained: the main model's checkpoints are all there, the
    // branch's only up to its second.
    for later in &branch_ckpts[2..] {
        std::fs::remove_dir_all(later).unwrap();
    }
    let resumed =
        crate::quickstart::try_run_toml_with(&text, 2, &dir.join("resumed"), true).unwrap();
    assert_eq!(resumed.parameter_checksum, full.parameter_checksum);
    assert_eq!(
        resumed.branches[0].parameter_checksum,
        full.branches[0].parameter_checksum
    );
    // As if killed during the main model's training: its checkpoints up to the second, the
    // branch's none. Both resume (the branch from the start) to the same models.
    std::fs::remove_dir_all(ckpt.join("branches")).unwrap();
    for later in &checkpoints(&ckpt)[2..] {
        std::fs::remove_dir_all(later).unwrap();
    }
    let resumed =
        crate::quickstart::try_run_toml_with(&text, 2, &dir.join("resumed-2"), true).unwrap();
    assert_eq!(resumed.parameter_checksum, full.parameter_checksum);
    assert_eq!(
        resumed.branches[0].parameter_checksum,
        full.branches[0].parameter_checksum
    );
    assert!(resumed.resumed_from_step.is_some());
}
