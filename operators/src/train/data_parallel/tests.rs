//! Tests of the parent module.
use millrace_engine::{ClusterConfig, MetricsRegistry, execute};
use millrace_ml::backend::CpuAutodiff;
use millrace_ml::model::{ModelKind, ModelSpec, Task};
use millrace_ml::optim::{Decay, LrSchedule, OptimizerSpec};
use millrace_ml::preprocess::{Features, Targets};
use millrace_ml::trainer::{Loss, Reduction, Trainer};

use super::stepper::{InFlight, settle};
use super::*;
use crate::spec::TaskKind;

/// Trains linear regression with `mae`, SGD at lr 1 (no momentum, no decay) from zero
/// parameters on `workers` workers; every target is far above the output, so each row's
/// gradient on the bias is exactly -1. Returns the final bias of every worker and the steps.
fn bias_after_training(
    workers: usize,
    reduction: Reduction,
    lr_schedule: LrSchedule,
) -> (Vec<f32>, u64) {
    const ROWS: usize = 200;
    let spec = TrainSpec {
        task: TaskKind::Regression,
        model: ModelSpec::new(ModelKind::Linear).into(),
        optimizer: OptimizerSpec::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
        loss: Some(Loss::Mae.into()),
        reduction,
        lr: 1.0,
        lr_schedule,
        batch_size: 64,
        epochs: 2,
        seed: 3,
        shuffle: true,
        log_every: 1,
        device: Default::default(),
        precision: Default::default(),
        kernel_cache: None,
        memory_budget: None,
    };
    let results = execute(
        &ClusterConfig::local(workers),
        MetricsRegistry::new(),
        move |worker, ctx| -> Result<(f32, u64)> {
            // Worker w holds rows w, w + workers, …
            let mine: Vec<usize> = (ctx.index..ROWS).step_by(ctx.peers).collect();
            let x: Vec<f32> = mine
                .iter()
                .flat_map(|&r| [(r as f32 * 0.37).sin(), (r as f32 * 0.11).cos()])
                .collect();
            let train = Features {
                x,
                y: Some(Targets::Values(vec![1e7; mine.len()])),
                rows: mine.len(),
                accepted: Vec::new(),
                rejected: Vec::new(),
            };
            let task = Task::Regression;
            let mut trainer = Replica::from(Trainer::<CpuAutodiff>::new(
                &spec.model.builtin()?.expect("a built-in model"),
                &spec.optimizer,
                spec.loss_for(&task)?,
                &task,
                2,
                spec.seed,
                &Default::default(),
            )?);
            trainer.set_parameters(&[0.0; 3])?;
            let mut evaluator = Evaluator::new(None, None);
            let rows = crate::train::TrainRows::new(worker, &ctx, &train)?;
            let report = train_data_parallel(
                worker,
                &ctx,
                &mut trainer,
                &rows,
                &mut evaluator,
                &spec,
                &mut TrainControl::default(),
            )?;
            assert_eq!(trainer.steps(), report.steps);
            Ok((trainer.parameters()[2], report.steps))
        },
    )
    .unwrap();
    let steps = results[0].1;
    (results.into_iter().map(|(b, _)| b).collect(), steps)
}

#[test]
fn sum_reduction_applies_the_summed_gradient() {
    for workers in [1, 3] {
        // Sum: the bias grows by exactly 1 per row visit (200 rows x 2 epochs).
        let (bias, steps) = bias_after_training(workers, Reduction::Sum, LrSchedule::default());
        assert_eq!(bias, vec![400.0; workers], "{workers} workers");
        assert_eq!(steps, 8);
        // Mean: by 1 per step.
        let (bias, _) = bias_after_training(workers, Reduction::Mean, LrSchedule::default());
        for b in bias {
            assert!((b - 8.0).abs() < 1e-5, "{workers} workers: bias {b}");
        }
    }
}

#[test]
fn every_step_applies_the_schedules_rate_on_any_number_of_workers() {
    // With a mean reduction each step moves the bias by exactly its rate: the bias is the sum
    // of the 8 steps' rates (2 of warmup, then half a cosine down to 0.1).
    let schedule = LrSchedule {
        kind: Decay::Cosine,
        warmup_steps: 2,
        min_lr: 0.1,
    };
    let rates: Vec<f64> = (0..8).map(|s| schedule.lr_at(1.0, s, 8)).collect();
    let expected: f32 = rates.iter().map(|&r| r as f32).sum();
    let (one, steps) = bias_after_training(1, Reduction::Mean, schedule);
    assert_eq!(steps, 8);
    assert!(
        (one[0] - expected).abs() < 1e-5,
        "bias {} != {expected}",
        one[0]
    );
    // Well below the 8.0 of a constant rate, and the same bits on 3 workers.
    assert!(one[0] < 6.0, "{}", one[0]);
    let (three, _) = bias_after_training(3, Reduction::Mean, schedule);
    assert_eq!(three, vec![one[0]; 3]);
}

#[test]
fn a_lagging_step_is_accounted_once_when_its_loss_arrives() {
    let mut position = TrainPosition {
        epoch: 0,
        step_in_epoch: 2,
        steps_per_epoch: 4,
        global_step: 2,
        epoch_loss: 0.0,
        last_epoch_loss: f64::NAN,
        rows_trained: 0,
        train_s: 0.0,
        seed: 1,
        data: DataFingerprint { rows: 40, hash: 0 },
        evals: Vec::new(),
    };
    let mut events = Vec::new();
    let mut on_event = |e: TrainEvent| {
        if let TrainEvent::Step {
            step, loss, rows, ..
        } = e
        {
            events.push((step, loss, rows));
        }
    };
    let first = InFlight {
        epoch: 0,
        step: 1,
        rows: 10,
        lr: 0.1,
    };
    // The first step answers nothing; the second hands back the first's loss.
    settle(&mut position, None, None, &mut on_event).unwrap();
    settle(&mut position, Some(first), Some(5.0), &mut on_event).unwrap();
    let second = InFlight { step: 2, ..first };
    settle(&mut position, Some(second), Some(2.5), &mut on_event).unwrap();
    assert_eq!(events, vec![(1, 0.5, 10), (2, 0.25, 10)]);
    assert_eq!((position.epoch_loss, position.rows_trained), (7.5, 20));
    // A loss without a step, or a step whose loss never comes, is a bug, not a silent skip.
    let err = settle(&mut position, Some(second), None, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("step 2"), "{err}");
    assert!(settle(&mut position, None, Some(1.0), &mut |_| {}).is_err());
    assert_eq!((position.epoch_loss, position.rows_trained), (7.5, 20));
}

/// Trains a small MLP classifier for 3 shuffled epochs of 32-row batches on `workers` workers,
/// with the rows in memory or spilled to disk in small buckets, optionally stopping after
/// global step `stop` and going on from the report's position. Returns the parameter checksum.
fn mlp_checksum(workers: usize, spill: bool, stop: Option<u64>) -> u64 {
    const ROWS: usize = 700;
    const DIM: usize = 5;
    let spec = TrainSpec {
        task: TaskKind::Classification,
        model: ModelSpec {
            kind: ModelKind::Mlp,
            hidden: vec![8],
            activation: Default::default(),
        }
        .into(),
        optimizer: OptimizerSpec::default(),
        loss: None,
        reduction: Reduction::Mean,
        lr: 0.05,
        lr_schedule: LrSchedule::default(),
        batch_size: 32,
        epochs: 3,
        seed: 11,
        shuffle: true,
        log_every: 1,
        device: Default::default(),
        precision: Default::default(),
        kernel_cache: None,
        memory_budget: None,
    };
    let results = execute(
        &ClusterConfig::local(workers),
        MetricsRegistry::new(),
        move |worker, ctx| -> Result<u64> {
            let mine: Vec<usize> = (ctx.index..ROWS).step_by(ctx.peers).collect();
            let x: Vec<f32> = mine
                .iter()
                .flat_map(|&r| (0..DIM).map(move |d| ((r * 7 + d * 13) as f32 * 0.29).sin()))
                .collect();
            let y: Vec<i64> = mine.iter().map(|&r| i64::from(r % 3 == 0)).collect();
            let task = Task::Classification { num_classes: 2 };
            let mut trainer = Replica::from(Trainer::<CpuAutodiff>::new(
                &spec.model.builtin()?.expect("a built-in model"),
                &spec.optimizer,
                spec.loss_for(&task)?,
                &task,
                DIM,
                spec.seed,
                &Default::default(),
            )?);
            let features = Features {
                x,
                y: Some(Targets::Classes(y)),
                rows: mine.len(),
                accepted: Vec::new(),
                rejected: Vec::new(),
            };
            let rows = if spill {
                let dir = std::sync::Arc::new(crate::train::spill::SpillDir::create("test")?);
                // About 8 buckets of rows; the second epoch's seed re-buckets them.
                let mut writer = crate::train::spill::BucketWriter::new(
                    dir,
                    spec.seed,
                    DIM,
                    true,
                    mine.len() as u64,
                    (mine.len() as u64 * 52) / 8,
                );
                let half = mine.len() / 2;
                let targets = features.y.as_ref().expect("labels");
                let Targets::Classes(c) = targets else {
                    unreachable!()
                };
                writer.add(
                    &features.x[..half * DIM],
                    &Targets::Classes(c[..half].to_vec()),
                    None,
                )?;
                writer.add(
                    &features.x[half * DIM..],
                    &Targets::Classes(c[half..].to_vec()),
                    None,
                )?;
                crate::train::TrainRows::spilled(worker, &ctx, writer.finish()?)?
            } else {
                crate::train::TrainRows::new(worker, &ctx, &features)?
            };
            let mut evaluator = Evaluator::new(None, None);
            let mut control = TrainControl {
                stop_after_step: stop,
                ..TrainControl::default()
            };
            let mut report = train_data_parallel(
                worker,
                &ctx,
                &mut trainer,
                &rows,
                &mut evaluator,
                &spec,
                &mut control,
            )?;
            if stop.is_some() {
                let mut control = TrainControl {
                    resume: Some(report.position),
                    ..TrainControl::default()
                };
                report = train_data_parallel(
                    worker,
                    &ctx,
                    &mut trainer,
                    &rows,
                    &mut evaluator,
                    &spec,
                    &mut control,
                )?;
            }
            assert_eq!(report.steps, 3 * 22, "700 rows in 32-row steps, 3 epochs");
            Ok(report.parameter_checksum)
        },
    )
    .unwrap();
    results[0]
}

#[test]
fn spilled_rows_train_the_same_model_bit_for_bit() {
    let in_memory = mlp_checksum(1, false, None);
    assert_eq!(mlp_checksum(1, true, None), in_memory, "1 worker, spilled");
    let two = mlp_checksum(2, false, None);
    assert_eq!(mlp_checksum(2, true, None), two, "2 workers, spilled");
    // Stopped mid-epoch (step 30 of 66, in the second epoch) and continued from the position.
    assert_eq!(
        mlp_checksum(2, true, Some(30)),
        two,
        "spilled, stopped and resumed"
    );
    assert_eq!(
        mlp_checksum(1, true, Some(5)),
        in_memory,
        "spilled, stopped in epoch 1"
    );
}
