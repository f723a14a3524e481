//! Splitting a dataset's row groups into balanced, contiguous parts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::dataset::ParquetFileInfo;

/// Some row groups of one file: the unit of work handed to a reader.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScanUnit {
    /// The file to read.
    pub file: PathBuf,
    /// Index of the file in [`ParquetDataset::files`](super::ParquetDataset::files).
    pub file_index: usize,
    /// Row-group indices within the file, ascending.
    pub row_groups: Vec<usize>,
    /// Total rows of those row groups.
    pub rows: u64,
}

/// See [`ParquetDataset::plan`](super::ParquetDataset::plan).
///
/// The global row-group sequence is cut at `parts - 1` boundaries; boundary `k` is the prefix
/// (in row groups) whose row total is nearest to `k * total / parts` (ties go to the shorter
/// prefix), never before boundary `k - 1`. When every row group is empty, counts replace rows.
pub(crate) fn plan_row_groups(files: &[ParquetFileInfo], parts: usize) -> Vec<Vec<ScanUnit>> {
    let parts = parts.max(1);
    // (file index, row group, rows, compressed bytes) in global order.
    let groups: Vec<(usize, usize, u64, u64)> = files
        .iter()
        .enumerate()
        .flat_map(|(f, info)| {
            info.row_groups
                .iter()
                .enumerate()
                .map(move |(g, rg)| (f, g, rg.rows, rg.compressed_bytes))
        })
        .collect();
    // Weigh by size where footers give it (they always do for real files), else by rows, else
    // by count.
    let total_bytes: u64 = groups.iter().map(|g| g.3).sum();
    let total_rows: u64 = groups.iter().map(|g| g.2).sum();
    let weight = |g: &(usize, usize, u64, u64)| -> u128 {
        if total_bytes > 0 {
            u128::from(g.3)
        } else if total_rows > 0 {
            u128::from(g.2)
        } else {
            1
        }
    };
    // cumulative[i] = weight of the first i row groups.
    let mut cumulative = Vec::with_capacity(groups.len() + 1);
    cumulative.push(0u128);
    for g in &groups {
        let last = cumulative.last().copied().unwrap_or(0);
        cumulative.push(last + weight(g));
    }
    let total = cumulative.last().copied().unwrap_or(0);

    let mut bounds = Vec::with_capacity(parts + 1);
    bounds.push(0usize);
    for k in 1..parts {
        let lower = bounds.last().copied().unwrap_or(0);
        bounds.push(nearest_boundary(
            &cumulative,
            lower,
            total,
            k as u128,
            parts as u128,
        ));
    }
    bounds.push(groups.len());

    bounds
        .windows(2)
        .map(|w| units_for(&groups[w[0]..w[1]], files))
        .collect()
}

/// The index `i >= lower` minimising `|cumulative[i] - total * k / parts|` (compared exactly, as
/// `|cumulative[i] * parts - total * k|`), the smaller on ties.
fn nearest_boundary(cumulative: &[u128], lower: usize, total: u128, k: u128, parts: u128) -> usize {
    let target = total * k; // compare against cumulative[i] * parts
    let rest = &cumulative[lower..];
    // First index whose scaled prefix reaches the target.
    let above = lower + rest.partition_point(|&c| c * parts < target);
    let above = above.min(cumulative.len() - 1);
    if above == lower {
        return lower;
    }
    let below = above - 1;
    let dist_below = target - cumulative[below] * parts;
    let dist_above = (cumulative[above] * parts).abs_diff(target);
    if dist_below <= dist_above {
        below
    } else {
        above
    }
}

/// Groups a contiguous run of (file, row group, rows) into one unit per file.
fn units_for(run: &[(usize, usize, u64, u64)], files: &[ParquetFileInfo]) -> Vec<ScanUnit> {
    let mut units: Vec<ScanUnit> = Vec::new();
    for &(file_index, row_group, rows, _) in run {
        match units.last_mut() {
            Some(unit) if unit.file_index == file_index => {
                unit.row_groups.push(row_group);
                unit.rows += rows;
            }
            _ => units.push(ScanUnit {
                file: files[file_index].path.clone(),
                file_index,
                row_groups: vec![row_group],
                rows,
            }),
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::super::dataset::RowGroupInfo;
    use super::*;

    fn files(layout: &[&[u64]]) -> Vec<ParquetFileInfo> {
        layout
            .iter()
            .enumerate()
            .map(|(i, rgs)| ParquetFileInfo {
                path: PathBuf::from(format!("/d/part-{i}.parquet")),
                rows: rgs.iter().sum(),
                size_bytes: 0,
                partition_values: Vec::new(),
                row_groups: rgs
                    .iter()
                    .map(|&rows| RowGroupInfo {
                        rows,
                        compressed_bytes: 0,
                    })
                    .collect(),
            })
            .collect()
    }

    fn rows_per_part(plan: &[Vec<ScanUnit>]) -> Vec<u64> {
        plan.iter()
            .map(|p| p.iter().map(|u| u.rows).sum())
            .collect()
    }

    #[test]
    fn balanced_and_contiguous() {
        let f = files(&[&[100, 100, 100], &[100]]);
        assert_eq!(rows_per_part(&plan_row_groups(&f, 2)), vec![200, 200]);
        let plan = plan_row_groups(&f, 3);
        // targets 133 and 267: prefixes 100 and 300 are nearest
        assert_eq!(rows_per_part(&plan), vec![100, 200, 100]);
        assert_eq!(plan[1][0].row_groups, vec![1, 2]);
        assert_eq!(plan[2][0].file_index, 1);
    }

    #[test]
    fn one_big_row_group() {
        let f = files(&[&[10, 1000, 10, 10]]);
        // target 515: prefix 1010 (distance 495) beats prefix 10 (distance 505)
        assert_eq!(rows_per_part(&plan_row_groups(&f, 2)), vec![1010, 20]);
        assert_eq!(rows_per_part(&plan_row_groups(&f, 1)), vec![1030]);
    }

    #[test]
    fn more_parts_than_row_groups_and_zero_parts() {
        let f = files(&[&[5], &[5]]);
        let plan = plan_row_groups(&f, 5);
        assert_eq!(plan.len(), 5);
        assert_eq!(rows_per_part(&plan).iter().sum::<u64>(), 10);
        assert_eq!(plan.iter().filter(|p| !p.is_empty()).count(), 2);
        assert_eq!(plan_row_groups(&f, 0).len(), 1);
    }

    #[test]
    fn sizes_outweigh_rows() {
        let mut f = files(&[&[100, 100, 100, 100]]);
        for (rg, bytes) in f[0].row_groups.iter_mut().zip([300, 100, 100, 100]) {
            rg.compressed_bytes = bytes;
        }
        // 600 bytes: the first row group alone is half.
        assert_eq!(rows_per_part(&plan_row_groups(&f, 2)), vec![100, 300]);
    }

    #[test]
    fn empty_row_groups_are_spread_by_count() {
        let f = files(&[&[0, 0, 0, 0]]);
        let plan = plan_row_groups(&f, 2);
        assert_eq!(plan[0][0].row_groups, vec![0, 1]);
        assert_eq!(plan[1][0].row_groups, vec![2, 3]);
        assert!(plan_row_groups(&files(&[]), 3).iter().all(|p| p.is_empty()));
    }

    #[test]
    fn chunk_spanning_files_makes_one_unit_per_file() {
        let f = files(&[&[10], &[10], &[10], &[10]]);
        let plan = plan_row_groups(&f, 2);
        assert_eq!(plan[0].len(), 2);
        assert_eq!(plan[0][1].file, PathBuf::from("/d/part-1.parquet"));
        assert_eq!(
            plan[1].iter().map(|u| u.file_index).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }
}
