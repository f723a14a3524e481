//! The synthetic tabular dataset: distribution, timestamps, determinism.

use std::fs;

use arrow::array::{Array, Float32Array, Int8Array, StringArray, TimestampMicrosecondArray};
use millrace_connectors::parquet::{ParquetDataset, ScanOptions};
use millrace_connectors::synthetic::tabular::{
    CATEGORY_P, HOLDOUT_T0_MICROS, TRAIN_T0_MICROS, TabularSpec, generate, mu, schema, sigma,
};

use crate::fixtures::{TempDir, TestResult};

/// Column sums gathered from a whole dataset.
#[derive(Default)]
struct Tally {
    rows: u64,
    positives: u64,
    nulls_f3: u64,
    sum: [f64; 16],
    sum_sq: [f64; 16],
    count: [u64; 16],
    cats: [u64; 8],
    ts: Vec<i64>,
}

fn tally(dir: &std::path::Path) -> TestResult<Tally> {
    let ds = ParquetDataset::open(dir)?;
    assert_eq!(ds.schema().fields(), schema().fields());
    let mut t = Tally::default();
    for unit in ds.plan(3).iter().flatten() {
        for item in ds.read_unit(unit, &ScanOptions::default())? {
            let (_, batch) = item?;
            t.rows += batch.num_rows() as u64;
            for j in 0..16 {
                let col = batch
                    .column(j)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or("f not f32")?;
                for v in col.iter().flatten() {
                    t.sum[j] += f64::from(v);
                    t.sum_sq[j] += f64::from(v) * f64::from(v);
                    t.count[j] += 1;
                }
                if j == 3 {
                    t.nulls_f3 += col.null_count() as u64;
                } else {
                    assert_eq!(col.null_count(), 0, "f{j} has nulls");
                }
            }
            let cat = batch
                .column(16)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or("cat not utf8")?;
            for v in cat.iter() {
                let k: usize = v
                    .ok_or("null cat")?
                    .strip_prefix('c')
                    .ok_or("bad cat")?
                    .parse()?;
                t.cats[k] += 1;
            }
            let ts = batch
                .column(17)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or("ts type")?;
            t.ts.extend(ts.values().iter());
            let label = batch
                .column(18)
                .as_any()
                .downcast_ref::<Int8Array>()
                .ok_or("label not i8")?;
            assert!(label.values().iter().all(|&v| v == 0 || v == 1));
            t.positives += label.values().iter().map(|&v| v as u64).sum::<u64>();
        }
    }
    Ok(t)
}

#[test]
fn distribution_follows_the_generative_rule() -> TestResult {
    let dir = TempDir::new("tabular-dist")?;
    let spec = TabularSpec {
        rows: 200_000,
        files: 4,
        seed: 1,
        holdout: false,
        row_group_rows: 16_384,
        entities: 0,
    };
    let report = generate(&spec, dir.path())?;
    let names: Vec<String> = report
        .files
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into())
        .collect();
    assert_eq!(
        names,
        vec![
            "part-00000.parquet",
            "part-00001.parquet",
            "part-00002.parquet",
            "part-00003.parquet"
        ]
    );

    let ds = ParquetDataset::open(dir.path())?;
    let rg_rows: Vec<u64> = ds.files()[0].row_groups.iter().map(|rg| rg.rows).collect();
    assert_eq!(rg_rows, vec![16_384, 16_384, 16_384, 848]);

    let t = tally(dir.path())?;
    let n = t.rows as f64;
    assert_eq!(t.rows, 200_000);
    assert_eq!(
        (report.rows, report.positives, report.nulls_f3),
        (t.rows, t.positives, t.nulls_f3)
    );
    let positive_rate = t.positives as f64 / n;
    assert!(
        (positive_rate - 0.474).abs() < 0.01,
        "P(label=1) = {positive_rate}"
    );
    let null_rate = t.nulls_f3 as f64 / n;
    assert!(
        (null_rate - 0.01).abs() < 0.0015,
        "f3 null rate = {null_rate}"
    );
    for j in 0..16 {
        let c = t.count[j] as f64;
        let mean = t.sum[j] / c;
        let std = (t.sum_sq[j] / c - mean * mean).sqrt();
        assert!(
            (mean - mu(j)).abs() < 0.05,
            "f{j}: mean {mean}, want {}",
            mu(j)
        );
        assert!(
            (std / sigma(j) - 1.0).abs() < 0.01,
            "f{j}: std {std}, want {}",
            sigma(j)
        );
    }
    for (k, p) in CATEGORY_P.iter().enumerate() {
        let freq = t.cats[k] as f64 / n;
        assert!((freq - p).abs() < 0.004, "c{k}: {freq}, want {p}");
    }
    // ts: 2024-01-01 plus 100 ms per row, across files in order.
    assert_eq!(t.ts.first().copied(), Some(TRAIN_T0_MICROS));
    assert!(
        t.ts.windows(2).all(|w| w[1] - w[0] == 100_000),
        "ts not strictly 100 ms apart"
    );
    assert_eq!(
        t.ts.last().copied(),
        Some(TRAIN_T0_MICROS + 199_999 * 100_000)
    );
    Ok(())
}

#[test]
fn same_spec_same_bytes_and_holdout_differs() -> TestResult {
    let dir = TempDir::new("tabular-det")?;
    let spec = TabularSpec {
        rows: 5_001,
        files: 3,
        seed: 9,
        holdout: false,
        row_group_rows: 1_000,
        entities: 0,
    };
    let a = generate(&spec, &dir.join("a"))?;
    let b = generate(&spec, &dir.join("b"))?;
    assert_eq!(a.rows, 5_001);
    for (x, y) in a.files.iter().zip(&b.files) {
        assert_eq!(fs::read(x)?, fs::read(y)?, "{} differs", x.display());
    }
    // Regenerating over an existing output overwrites it with the same bytes.
    let again = generate(&spec, &dir.join("a"))?;
    assert_eq!(fs::read(&again.files[2])?, fs::read(&b.files[2])?);

    let other_seed = generate(
        &TabularSpec {
            seed: 10,
            ..spec.clone()
        },
        &dir.join("c"),
    )?;
    assert_ne!(fs::read(&other_seed.files[0])?, fs::read(&a.files[0])?);

    let holdout = TabularSpec {
        holdout: true,
        files: 1,
        ..spec.clone()
    };
    let h = generate(&holdout, &dir.join("h"))?;
    let t = tally(&dir.join("h"))?;
    assert_eq!(t.ts.first().copied(), Some(HOLDOUT_T0_MICROS));
    let train = tally(&dir.join("a"))?;
    assert_ne!(train.sum[0], t.sum[0], "holdout repeats the training rows");
    assert_eq!(h.rows, 5_001);
    Ok(())
}

#[test]
fn bad_specs_and_stale_outputs_are_rejected() -> TestResult {
    let dir = TempDir::new("tabular-bad")?;
    let spec = TabularSpec {
        rows: 100,
        files: 3,
        seed: 1,
        holdout: false,
        row_group_rows: 50,
        entities: 0,
    };
    generate(&spec, dir.path())?;
    let fewer = TabularSpec {
        files: 2,
        ..spec.clone()
    };
    let msg = generate(&fewer, dir.path())
        .err()
        .ok_or("stale part accepted")?
        .to_string();
    assert!(
        msg.contains("part-00002.parquet") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
    let zero = TabularSpec {
        files: 0,
        ..spec.clone()
    };
    assert!(
        generate(&zero, &dir.join("z"))
            .err()
            .ok_or("0 files accepted")?
            .to_string()
            .contains("TabularSpec.files")
    );
    let zero_rg = TabularSpec {
        row_group_rows: 0,
        ..spec
    };
    assert!(generate(&zero_rg, &dir.join("z")).is_err());
    Ok(())
}
