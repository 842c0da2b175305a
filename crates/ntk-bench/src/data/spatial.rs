//! The spatial transfer problem: a source data set to train the network on
//! and a target data set to adapt to with a few points, tested on the rest.
//!
//! The split is the part the authors' published malaria script got wrong (it
//! selected the training rows with the test year): here the source and target
//! rows come from disjoint sets by construction, the adaptation and test
//! points are disjoint draws from the target only, and the tests check both.

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::data::DataError;

/// The paper's number of held-out test points.
pub const MAX_TEST_POINTS: usize = 5000;

/// Inputs (n × 2: scaled lon, lat, one row per point) and targets.
pub type Points = (DMatrix<f64>, DVector<f64>);

/// A source and a target data set on the same input space.
#[derive(Debug, Clone)]
pub struct SpatialProblem {
    /// Where the network is trained (the malaria 2012 map; a source region).
    pub source: Points,
    /// What it adapts to (the malaria 2016 map; a target region).
    pub target: Points,
}

/// The target's seeded split into adaptation and held-out test points.
#[derive(Debug, Clone)]
pub struct TargetSplit {
    /// The `m` points the adapted model conditions on.
    pub adapt: Points,
    /// The held-out test points (disjoint from `adapt`).
    pub test: Points,
}

impl SpatialProblem {
    /// Draws `m` adaptation points from the target and, from the remaining
    /// target points, up to `max_test` test points (all of them if fewer),
    /// with a seeded shuffle. Fails if the target has fewer than `m + 1` points.
    pub fn split_target(
        &self,
        m: usize,
        max_test: usize,
        seed: u64,
    ) -> Result<TargetSplit, DataError> {
        let n = self.target.1.len();
        if m >= n {
            return Err(DataError::Invalid(format!(
                "cannot take {m} adaptation points and leave a test point from {n} target points"
            )));
        }
        let order = shuffled(n, seed);
        let test_len = (n - m).min(max_test);
        Ok(TargetSplit {
            adapt: select(&self.target, &order[..m]),
            test: select(&self.target, &order[m..m + test_len]),
        })
    }

    /// One seeded shuffle of the target split into `n_test` held-out test points (the same
    /// for every `m`) and, from the rest, the first `m` of a fixed order for each size in
    /// `sizes` (so the adaptation sets are nested: a larger `m` adds points). Fails if some
    /// `m` exceeds the points left after the test set.
    pub fn split_target_nested(
        &self,
        sizes: &[usize],
        n_test: usize,
        seed: u64,
    ) -> Result<(Points, Vec<Points>), DataError> {
        let n = self.target.1.len();
        let pool = n.saturating_sub(n_test);
        if n_test == 0 || n_test > n {
            return Err(DataError::Invalid(format!(
                "cannot hold out {n_test} test points from {n} target points"
            )));
        }
        if let Some(&m) = sizes.iter().find(|&&m| m > pool) {
            return Err(DataError::Invalid(format!(
                "cannot take {m} adaptation points: {n} target points, {n_test} held out"
            )));
        }
        let order = shuffled(n, seed);
        let (test, rest) = order.split_at(n_test);
        Ok((
            select(&self.target, test),
            sizes
                .iter()
                .map(|&m| select(&self.target, &rest[..m]))
                .collect(),
        ))
    }

    /// `n` source points drawn without replacement with a seeded shuffle (the
    /// paper trains on 2000); all of them, shuffled, if there are fewer.
    pub fn subsample_source(&self, n: usize, seed: u64) -> Points {
        let order = shuffled(self.source.1.len(), seed);
        select(&self.source, &order[..n.min(order.len())])
    }
}

/// Indices 0..n in a seeded random order.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order
}

/// The rows `idx` of a data set.
pub fn select(points: &Points, idx: &[usize]) -> Points {
    let (x, y) = points;
    (
        x.select_rows(idx),
        DVector::from_iterator(idx.len(), idx.iter().map(|&i| y[i])),
    )
}

/// Scales each column of the rows of both sets to [0, 1] with the min and
/// max over the two sets together (the authors' `unitize` over all rows), so
/// the sets share one input space. A constant column maps to 0.
pub fn unit_scale(a: &[[f64; 2]], b: &[[f64; 2]]) -> (DMatrix<f64>, DMatrix<f64>) {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for p in a.iter().chain(b) {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let scale = |v: f64, k: usize| {
        let range = hi[k] - lo[k];
        if range > 0.0 {
            (v - lo[k]) / range
        } else {
            0.0
        }
    };
    let matrix = |set: &[[f64; 2]]| DMatrix::from_fn(set.len(), 2, |i, k| scale(set[i][k], k));
    (matrix(a), matrix(b))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The rows of `x` as exact bit patterns, to compare point sets.
    pub(crate) fn row_keys(x: &DMatrix<f64>) -> HashSet<Vec<u64>> {
        x.row_iter()
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    }

    fn toy() -> SpatialProblem {
        let pts: Vec<[f64; 2]> = (0..50).map(|i| [i as f64, (i * 7 % 50) as f64]).collect();
        let (src, tgt) = pts.split_at(20);
        let (xs, xt) = unit_scale(src, tgt);
        SpatialProblem {
            source: (xs, DVector::from_fn(20, |i, _| i as f64)),
            target: (xt, DVector::from_fn(30, |i, _| 100.0 + i as f64)),
        }
    }

    #[test]
    fn split_is_disjoint_seeded_and_capped() {
        let p = toy();
        let s = p.split_target(5, 10, 7).unwrap();
        assert_eq!((s.adapt.1.len(), s.test.1.len()), (5, 10));
        assert!(row_keys(&s.adapt.0).is_disjoint(&row_keys(&s.test.0)));
        let target = row_keys(&p.target.0);
        assert!(row_keys(&s.adapt.0).is_subset(&target) && row_keys(&s.test.0).is_subset(&target));
        assert!(s.adapt.1.iter().chain(s.test.1.iter()).all(|&y| y >= 100.0));

        let again = p.split_target(5, 10, 7).unwrap();
        assert_eq!(again.adapt.0, s.adapt.0);
        let other = p.split_target(5, 10, 8).unwrap();
        assert_ne!(other.adapt.0, s.adapt.0);

        let all = p.split_target(5, MAX_TEST_POINTS, 7).unwrap();
        assert_eq!(all.test.1.len(), 25, "fewer than the cap: all the rest");
        assert!(p.split_target(30, 10, 7).is_err());
        assert_eq!(p.split_target(0, 10, 7).unwrap().adapt.1.len(), 0);
    }

    #[test]
    fn nested_split_keeps_one_test_set_and_grows_the_adaptation_set() {
        let p = toy();
        let (test, adapt) = p.split_target_nested(&[2, 5, 20], 10, 3).unwrap();
        assert_eq!(test.1.len(), 10);
        let test_keys = row_keys(&test.0);
        let target = row_keys(&p.target.0);
        assert!(test_keys.is_subset(&target));
        for (a, m) in adapt.iter().zip([2, 5, 20]) {
            assert_eq!(a.1.len(), m);
            assert!(row_keys(&a.0).is_subset(&target));
            assert!(row_keys(&a.0).is_disjoint(&test_keys));
            assert!(row_keys(&a.0).is_disjoint(&row_keys(&p.source.0)));
        }
        assert!(row_keys(&adapt[0].0).is_subset(&row_keys(&adapt[1].0)));
        assert!(row_keys(&adapt[1].0).is_subset(&row_keys(&adapt[2].0)));
        let (again, _) = p.split_target_nested(&[2], 10, 3).unwrap();
        assert_eq!(again.0, test.0, "the test set does not depend on the sizes");
        assert!(p.split_target_nested(&[21], 10, 3).is_err());
        assert!(p.split_target_nested(&[1], 0, 3).is_err());
        assert!(p.split_target_nested(&[1], 31, 3).is_err());
    }

    #[test]
    fn source_subsample_stays_in_the_source() {
        let p = toy();
        let (x, y) = p.subsample_source(8, 1);
        assert_eq!((x.nrows(), y.len()), (8, 8));
        assert!(row_keys(&x).is_subset(&row_keys(&p.source.0)));
        assert_eq!(p.subsample_source(1000, 1).1.len(), 20);
    }

    #[test]
    fn unit_scale_uses_all_sets() {
        let (a, b) = unit_scale(&[[0.0, 5.0], [2.0, 5.0]], &[[4.0, 5.0]]);
        assert_eq!(a[(1, 0)], 0.5);
        assert_eq!(b[(0, 0)], 1.0);
        assert_eq!(b[(0, 1)], 0.0, "constant column maps to 0");
    }
}
