//! Planning: every row group exactly once, contiguous, balanced; reading a plan = reading it all.

use millrace_connectors::parquet::{ParquetDataset, ScanOptions, ScanUnit};

use crate::fixtures::{TempDir, TestResult, ids, write_abc};

/// Files a..d with uneven row groups (d has none); ids run 0..99 across files in path order.
fn uneven(dir: &TempDir) -> TestResult<ParquetDataset> {
    write_abc(&dir.join("a.parquet"), 0, &[7, 1, 13])?;
    write_abc(&dir.join("b.parquet"), 21, &[2])?;
    write_abc(&dir.join("c.parquet"), 23, &[20, 3, 3, 30])?;
    write_abc(&dir.join("d.parquet"), 79, &[])?;
    write_abc(&dir.join("e/f.parquet"), 79, &[21])?;
    Ok(ParquetDataset::open(dir.path())?)
}

fn flatten(plan: &[Vec<ScanUnit>]) -> Vec<(usize, usize)> {
    plan.iter()
        .flatten()
        .flat_map(|u| u.row_groups.iter().map(move |&g| (u.file_index, g)))
        .collect()
}

#[test]
fn every_row_group_exactly_once_in_order() -> TestResult {
    let dir = TempDir::new("plan")?;
    let ds = uneven(&dir)?;
    assert_eq!(ds.num_rows(), 100);
    let all: Vec<(usize, usize)> = ds
        .files()
        .iter()
        .enumerate()
        .flat_map(|(f, info)| (0..info.row_groups.len()).map(move |g| (f, g)))
        .collect();
    assert_eq!(all.len(), 9);
    for parts in 1..=12 {
        let plan = ds.plan(parts);
        assert_eq!(plan.len(), parts);
        // Contiguous chunks of the global sequence: flattening gives it back exactly.
        assert_eq!(flatten(&plan), all, "parts = {parts}");
        for unit in plan.iter().flatten() {
            let info = &ds.files()[unit.file_index];
            assert_eq!(unit.file, info.path);
            let rows: u64 = unit
                .row_groups
                .iter()
                .map(|&g| info.row_groups[g].rows)
                .sum();
            assert_eq!(unit.rows, rows);
            assert!(!unit.row_groups.is_empty());
        }
        let total: u64 = plan.iter().flatten().map(|u| u.rows).sum();
        assert_eq!(total, 100);
        assert_eq!(plan, ds.plan(parts), "deterministic");
    }
    Ok(())
}

#[test]
fn parts_are_balanced_by_size() -> TestResult {
    let dir = TempDir::new("balance")?;
    let ds = uneven(&dir)?;
    // Row groups of 7 1 13 | 2 | 20 3 3 30 | 21 rows: their compressed sizes weigh the plan.
    let sizes: Vec<u64> = ds
        .files()
        .iter()
        .flat_map(|f| f.row_groups.iter().map(|rg| rg.compressed_bytes))
        .collect();
    let total: u64 = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for parts in 1..=5 {
        let plan = ds.plan(parts);
        let rows: u64 = plan.iter().flatten().map(|u| u.rows).sum();
        assert_eq!(rows, 100, "{parts} parts");
        // Each cut is the nearest row-group boundary to its target, so the prefix of the first
        // k parts is within half the largest row group of k/parts of the total.
        let mut prefix = 0u64;
        for (k, part) in plan.iter().enumerate().take(parts - 1) {
            prefix += part
                .iter()
                .map(|u| {
                    let file = &ds.files()[u.file_index];
                    u.row_groups
                        .iter()
                        .map(|&g| file.row_groups[g].compressed_bytes)
                        .sum::<u64>()
                })
                .sum::<u64>();
            let target = total * (k as u64 + 1) / parts as u64;
            assert!(
                prefix.abs_diff(target) <= largest / 2 + 1,
                "{parts} parts: cut {k} at {prefix} bytes, target {target}"
            );
        }
    }
    Ok(())
}

#[test]
fn reading_n_parts_equals_reading_one() -> TestResult {
    let dir = TempDir::new("plan-read")?;
    let ds = uneven(&dir)?;
    let options = ScanOptions {
        projection: None,
        batch_size: 4,
    };
    let read_all = |plan: Vec<Vec<ScanUnit>>| -> TestResult<Vec<i64>> {
        let mut out = Vec::new();
        for unit in plan.iter().flatten() {
            for item in ds.read_unit(unit, &options)? {
                out.extend(ids(&item?.1)?);
            }
        }
        Ok(out)
    };
    let one = read_all(ds.plan(1))?;
    assert_eq!(one, (0..100).collect::<Vec<i64>>());
    for parts in 2..=5 {
        assert_eq!(read_all(ds.plan(parts))?, one, "parts = {parts}");
    }
    Ok(())
}
