//! Training-step and transform throughput on one CPU core. Prints one JSON line.
//!
//! `cargo bench -p millrace-ml --bench train_step` (set `MILLRACE_BENCH_ASSERT=1` to fail when
//! the training step is below 400k samples/s).
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Array, Int64Array};
use arrow::record_batch::RecordBatch;
use millrace_ml::backend::{CpuAutodiff, cpu_device};
use millrace_ml::model::{Activation, ModelSpec, Task};
use millrace_ml::optim::{FlatOptimizer, OptimizerSpec};
use millrace_ml::preprocess::{FeatureSpec, FitState, LabelKind};
use millrace_ml::rng::Rng;
use millrace_ml::trainer::{Loss, TargetsRef, Trainer};

/// FLOP per row of one training step of the 24-64-64-2 MLP: forward, and backward's two
/// products per layer, 2 FLOP per multiply-add.
const FLOP_PER_ROW: f64 = 6.0 * (24.0 * 64.0 + 64.0 * 64.0 + 64.0 * 2.0);

/// Rows per second of `gradients` + `apply` at `batch` rows on one thread, through the dense
/// step or (with `burn`) burn's autodiff.
fn train_step_rate(batch: usize, burn: bool) -> Result<f64, millrace_ml::Error> {
    const DIM: usize = 24;
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..batch * DIM)
        .map(|_| rng.uniform_f32(-1.0, 1.0))
        .collect();
    let y: Vec<i64> = (0..batch).map(|i| (x[i * DIM] > 0.0) as i64).collect();
    let task = Task::Classification { num_classes: 2 };
    let spec = ModelSpec::mlp([64, 64], Activation::Relu);
    let mut trainer = Trainer::<CpuAutodiff>::new(
        &spec,
        &OptimizerSpec::default(),
        Loss::CrossEntropy,
        &task,
        DIM,
        0,
        &cpu_device(),
    )?;
    if burn {
        trainer = trainer.with_burn_gradients();
    }
    let step = |t: &mut Trainer<CpuAutodiff>| -> Result<(), millrace_ml::Error> {
        let (_, g) = t.gradients(&x, TargetsRef::Classes(&y), batch, 1.0 / batch as f32)?;
        t.apply(&g, 1e-3)
    };
    for _ in 0..20 {
        step(&mut trainer)?;
    }
    // About two million rows, whatever the batch.
    let steps = (2_000_000 / batch).max(50);
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut trainer)?;
    }
    Ok((steps * batch) as f64 / start.elapsed().as_secs_f64())
}

/// Parameters of the 24-64-64-2 MLP.
const PARAMS: usize = 24 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2;

/// Microseconds of one Adam update of the MLP's parameters alone: the part of a step that fusing
/// the optimiser into the backward pass could save (it cannot on several workers, whose
/// gradients are summed before the update).
fn adam_update_us() -> Result<f64, millrace_ml::Error> {
    let mut rng = Rng::new(3);
    let mut params: Vec<f32> = (0..PARAMS).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
    let grads: Vec<f32> = (0..PARAMS).map(|_| rng.uniform_f32(-1e-2, 1e-2)).collect();
    let mut adam = FlatOptimizer::new(&OptimizerSpec::default(), PARAMS)?;
    for _ in 0..100 {
        adam.step(&mut params, &grads, 1e-3)?;
    }
    let n = 20_000;
    let start = Instant::now();
    for _ in 0..n {
        adam.step(&mut params, &grads, 1e-3)?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

fn transform_seconds() -> Result<f64, Box<dyn std::error::Error>> {
    const ROWS: usize = 2_000_000;
    const COLS: usize = 24;
    let mut rng = Rng::new(2);
    let mut columns: Vec<(String, ArrayRef)> = (0..COLS)
        .map(|c| {
            let v: Vec<f32> = (0..ROWS).map(|_| rng.uniform_f32(0.0, 10.0)).collect();
            (format!("f{c}"), Arc::new(Float32Array::from(v)) as ArrayRef)
        })
        .collect();
    columns.push((
        "y".into(),
        Arc::new(Int64Array::from_iter_values(
            (0..ROWS as i64).map(|i| i % 2),
        )),
    ));
    let batch = RecordBatch::try_from_iter(columns)?;
    let spec = FeatureSpec {
        standardize: (0..COLS).map(|c| format!("f{c}")).collect(),
        label: "y".into(),
        ..FeatureSpec::default()
    };
    let mut state = FitState::new(&spec, LabelKind::Classification);
    state.update(&batch)?;
    let pre = state.finish()?;
    let start = Instant::now();
    let features = pre.transform(&batch, true)?;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(features.rows, ROWS);
    Ok(secs)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut steps = Vec::new();
    for batch in [512, 8192] {
        for (path, burn) in [("dense", false), ("burn", true)] {
            let rate = train_step_rate(batch, burn)?;
            steps.push(serde_json::json!({
                "path": path,
                "batch": batch,
                "rows_per_s": rate.round(),
                "gflop_per_s": (rate * FLOP_PER_ROW / 1e9 * 100.0).round() / 100.0,
            }));
        }
    }
    let transform = transform_seconds()?;
    let rate = steps[0]["rows_per_s"].as_f64().unwrap_or(0.0);
    let adam_us = adam_update_us()?;
    // One 512-row dense step, and the Adam update's share of it.
    let step_us = 512.0 / rate.max(1.0) * 1e6;
    println!(
        "{}",
        serde_json::json!({
            "bench": "millrace_ml_train_step",
            "model": "mlp 24-64-64-2 adam, one thread",
            "flop_per_row": FLOP_PER_ROW,
            "steps": steps,
            "samples_per_s": rate,
            "adam_update_us": (adam_us * 100.0).round() / 100.0,
            "adam_share_of_512_step": (adam_us / step_us * 1000.0).round() / 1000.0,
            "transform_2m_x_24_s": transform,
        })
    );
    if std::env::var_os("MILLRACE_BENCH_ASSERT").is_some() && rate < 400_000.0 {
        return Err(format!("training step too slow: {rate:.0} samples/s < 400000").into());
    }
    Ok(())
}
