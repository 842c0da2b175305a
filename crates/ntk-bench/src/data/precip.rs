//! The paper's precipitation preprocessing: a daily series becomes a smoothed
//! 365-day seasonal profile, split into the first 300 days (train) and the
//! last 65 (test).
//!
//! For each day of the year $d$ the profile is the mean of the strictly
//! positive observations, over all years of the series, whose day of year lies
//! within $d \pm 21$ days, the window wrapping at the year's end (DESIGN-NOTES
//! §2; the pipeline of the authors' related spectral-GP work).
//!
//! Decisions the paper leaves open:
//! - Calendar: days are numbered 0..365 in a non-leap year; 29 February is
//!   dropped (it has no day of year), so every year contributes the same days
//!   and 1 March is always day 59.
//! - Empty windows: a window with no positive observation (a dry spell longer
//!   than 43 days, or missing data) has no mean; the profile is 0 there (no
//!   rain expected), and [`PrecipTask::empty_windows`] counts such days.
//! - Inputs: the day index standardized over the year's grid, $(d - 182) /
//!   105.366$ (mean and standard deviation of 0..365), the same map for every
//!   task so that tasks share one input space.
//! - Targets: the profile minus its mean ([`MeanFrom`]: over all 365 days as
//!   the reference pipeline, or over the 300 training days only, which keeps
//!   the test days out of the centring).
//! - Split ([`Split`]): the last 65 days are the test days, as in the paper (extrapolation);
//!   65 days drawn at random are a diagnostic (interpolation between training days).

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::data::DataError;

/// Days in the profile (29 February dropped).
pub const DAYS_PER_YEAR: usize = 365;
/// Half-width of the smoothing window in days ($d \pm 21$).
pub const HALF_WINDOW: usize = 21;
/// Training days: the first 300 (about 10 months); the last 65 are the test.
pub const TRAIN_DAYS: usize = 300;

/// Cumulative days before each month in a non-leap year.
const MONTH_START: [usize; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
const MONTH_LEN: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Day of year in 0..365 of `month` (1–12) and `day` (1–31), in the non-leap
/// calendar; `None` for 29 February and for dates that do not exist.
pub fn day_of_year(month: u8, day: u8) -> Option<usize> {
    let m = usize::from(month).checked_sub(1).filter(|&m| m < 12)?;
    let d = usize::from(day)
        .checked_sub(1)
        .filter(|&d| d < MONTH_LEN[m])?;
    Some(MONTH_START[m] + d)
}

/// The smoothed profile and how many of its windows were empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// One value per day of year (mm).
    pub values: Vec<f64>,
    /// Days whose window held no positive observation (set to 0).
    pub empty_windows: usize,
}

/// The paper's smoothing: for each day of year $d$, the mean of the strictly
/// positive observations with day of year in $d \pm$ `half_window`, wrapping
/// at the year's end. `obs` are (day of year in 0..365, value); entries with a
/// day out of range or a non-finite value are ignored.
pub fn seasonal_profile(
    obs: impl IntoIterator<Item = (usize, f64)>,
    half_window: usize,
) -> Profile {
    let mut sum = [0.0f64; DAYS_PER_YEAR];
    let mut count = [0usize; DAYS_PER_YEAR];
    for (doy, v) in obs {
        if doy < DAYS_PER_YEAR && v.is_finite() && v > 0.0 {
            sum[doy] += v;
            count[doy] += 1;
        }
    }
    // A window wider than the year covers every day once.
    let half = half_window.min((DAYS_PER_YEAR - 1) / 2);
    let mut values = vec![0.0; DAYS_PER_YEAR];
    let mut empty_windows = 0;
    for (d, out) in values.iter_mut().enumerate() {
        let (mut s, mut c) = (0.0, 0usize);
        for k in 0..=2 * half {
            let j = (d + DAYS_PER_YEAR + k - half) % DAYS_PER_YEAR;
            s += sum[j];
            c += count[j];
        }
        if c == 0 {
            empty_windows += 1;
        } else {
            *out = s / c as f64;
        }
    }
    Profile {
        values,
        empty_windows,
    }
}

/// Which days the target mean is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MeanFrom {
    /// All 365 days (the reference pipeline: "subtract the mean").
    #[default]
    AllDays,
    /// The 300 training days only (no test information in the centring).
    TrainDays,
}

/// Which days of the year are held out for testing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Days 300–364, after the 300 training days (the paper's extrapolation).
    #[default]
    LastDays,
    /// 65 days drawn uniformly at random by a generator seeded with `seed`, the same for every
    /// task: predicting them interpolates between training days, a diagnostic that says how much
    /// of a method's error is extrapolation.
    Random {
        /// The generator's seed.
        seed: u64,
    },
}

impl Split {
    /// The training and test days, each in increasing order.
    pub fn days(&self) -> (Vec<usize>, Vec<usize>) {
        match *self {
            Split::LastDays => (
                (0..TRAIN_DAYS).collect(),
                (TRAIN_DAYS..DAYS_PER_YEAR).collect(),
            ),
            Split::Random { seed } => {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut test =
                    sample(&mut rng, DAYS_PER_YEAR, DAYS_PER_YEAR - TRAIN_DAYS).into_vec();
                test.sort_unstable();
                let train = (0..DAYS_PER_YEAR)
                    .filter(|d| test.binary_search(d).is_err())
                    .collect();
                (train, test)
            }
        }
    }
}

/// One precipitation task: a station's (or a city-year's) profile, split.
#[derive(Debug, Clone)]
pub struct PrecipTask {
    /// A readable name: station ID and name, or city and year.
    pub name: String,
    /// Training inputs, 300 × 1 (standardized day index).
    pub x_train: DMatrix<f64>,
    /// Training targets (profile minus [`PrecipTask::mean`]).
    pub y_train: DVector<f64>,
    /// Days of the year of the training rows, increasing.
    pub train_days: Vec<usize>,
    /// Days of the year of the test rows, increasing.
    pub test_days: Vec<usize>,
    /// The smoothed profile of all 365 days (mm), before centring.
    pub profile: Vec<f64>,
    /// Test inputs, 65 × 1.
    pub x_test: DMatrix<f64>,
    /// Test targets (profile minus [`PrecipTask::mean`]).
    pub y_test: DVector<f64>,
    /// The mean subtracted from the profile (mm); add it back to predictions.
    pub mean: f64,
    /// Days whose smoothing window held no positive observation.
    pub empty_windows: usize,
    /// How many observations (positive or not) the profile was built from.
    pub observations: usize,
}

/// The standardized input of day `d`: $(d - 182) / \sqrt{(365^2 - 1)/12}$.
pub fn standardize_day(d: usize) -> f64 {
    let n = DAYS_PER_YEAR as f64;
    let mean = (n - 1.0) / 2.0;
    let sd = ((n * n - 1.0) / 12.0).sqrt();
    (d as f64 - mean) / sd
}

/// Builds a task from daily observations (day of year, mm): smoothing, input
/// standardization, centring and the 300/65 split. Fails if there is not a
/// single positive observation (the profile would be all fill).
pub fn precip_task(
    name: impl Into<String>,
    obs: &[(usize, f64)],
    mean_from: MeanFrom,
) -> Result<PrecipTask, DataError> {
    let name = name.into();
    let profile = seasonal_profile(obs.iter().copied(), HALF_WINDOW);
    if profile.empty_windows == DAYS_PER_YEAR {
        return Err(DataError::Invalid(format!(
            "{name}: no positive precipitation observation ({} observations)",
            obs.len()
        )));
    }
    Ok(split_task(
        name,
        profile.values,
        profile.empty_windows,
        obs.len(),
        mean_from,
        Split::LastDays,
    ))
}

/// Centres and splits a smoothed profile.
fn split_task(
    name: String,
    profile: Vec<f64>,
    empty_windows: usize,
    observations: usize,
    mean_from: MeanFrom,
    split: Split,
) -> PrecipTask {
    let (train_days, test_days) = split.days();
    let mean = match mean_from {
        MeanFrom::AllDays => profile.iter().sum::<f64>() / profile.len() as f64,
        MeanFrom::TrainDays => {
            train_days.iter().map(|&d| profile[d]).sum::<f64>() / train_days.len() as f64
        }
    };
    let x = |days: &[usize]| {
        DMatrix::from_iterator(days.len(), 1, days.iter().map(|&d| standardize_day(d)))
    };
    let y = |days: &[usize]| {
        DVector::from_iterator(days.len(), days.iter().map(|&d| profile[d] - mean))
    };
    PrecipTask {
        name,
        x_train: x(&train_days),
        y_train: y(&train_days),
        x_test: x(&test_days),
        y_test: y(&test_days),
        train_days,
        test_days,
        mean,
        empty_windows,
        observations,
        profile,
    }
}

impl PrecipTask {
    /// The same profile centred by `mean_from` and split by `split`.
    pub fn resplit(&self, mean_from: MeanFrom, split: Split) -> PrecipTask {
        split_task(
            self.name.clone(),
            self.profile.clone(),
            self.empty_windows,
            self.observations,
            mean_from,
            split,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_year_drops_29_february() {
        assert_eq!(day_of_year(1, 1), Some(0));
        assert_eq!(day_of_year(2, 28), Some(58));
        assert_eq!(day_of_year(2, 29), None);
        assert_eq!(day_of_year(3, 1), Some(59));
        assert_eq!(day_of_year(12, 31), Some(364));
        assert_eq!(day_of_year(4, 31), None);
        assert_eq!(day_of_year(0, 1), None);
        assert_eq!(day_of_year(13, 1), None);
        assert_eq!(day_of_year(1, 0), None);
    }

    #[test]
    fn smoothing_averages_positive_values_and_wraps() {
        // Rain only on 31 December (3 mm) and 10 January (5 mm); zeros elsewhere.
        let mut obs: Vec<(usize, f64)> = (0..365).map(|d| (d, 0.0)).collect();
        obs[364].1 = 3.0;
        obs[9].1 = 5.0;
        let p = seasonal_profile(obs, HALF_WINDOW);
        // Day 0 sees both (31 Dec is 1 day back, 10 Jan 9 days ahead): zeros don't count.
        assert_eq!(p.values[0], 4.0);
        // Day 350 sees 31 Dec (14 days ahead) but not 10 Jan (24 days ahead, wrapped).
        assert_eq!(p.values[350], 3.0);
        // Day 343 is 21 days before 31 Dec: inside; day 342 is outside.
        assert_eq!(p.values[343], 3.0);
        assert_eq!(p.values[342], 0.0);
        // Day 30 sees 10 Jan (20 back) only.
        assert_eq!(p.values[30], 5.0);
        // Non-empty days: within 21 of day 364 or of day 9.
        let covered = (0..365)
            .filter(|&d| {
                let dist = |a: usize, b: usize| {
                    let k = a.abs_diff(b);
                    k.min(365 - k)
                };
                dist(d, 364) <= 21 || dist(d, 9) <= 21
            })
            .count();
        assert_eq!(p.empty_windows, 365 - covered);
    }

    #[test]
    fn smoothing_pools_years_and_ignores_bad_entries() {
        let obs = vec![
            (100, 2.0),
            (100, 4.0),
            (101, 6.0),
            (400, 9.0),
            (100, f64::NAN),
            (100, -1.0),
        ];
        let p = seasonal_profile(obs, 0);
        assert_eq!(p.values[100], 3.0);
        assert_eq!(p.values[101], 6.0);
        assert_eq!(p.empty_windows, 363);
        // A window wider than the year is the mean of everything.
        let p = seasonal_profile(vec![(0, 1.0), (200, 3.0)], 1000);
        assert!(p.values.iter().all(|&v| v == 2.0));
    }

    #[test]
    fn task_is_centred_split_and_standardized() {
        let obs: Vec<(usize, f64)> = (0..365).map(|d| (d, 1.0 + (d % 7) as f64)).collect();
        let t = precip_task("t", &obs, MeanFrom::AllDays).unwrap();
        assert_eq!((t.x_train.nrows(), t.x_train.ncols()), (300, 1));
        assert_eq!((t.x_test.nrows(), t.y_test.len()), (65, 65));
        let total = t.y_train.sum() + t.y_test.sum();
        assert!(total.abs() < 1e-9, "targets sum to {total}");
        let xs: Vec<f64> = t.x_train.iter().chain(t.x_test.iter()).copied().collect();
        let mean = xs.iter().sum::<f64>() / 365.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 365.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
        assert!(t.x_train[(299, 0)] < t.x_test[(0, 0)]);

        let t = precip_task("t", &obs, MeanFrom::TrainDays).unwrap();
        assert!(t.y_train.sum().abs() < 1e-9);
        assert_eq!(t.train_days, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn a_random_split_holds_out_65_days_the_same_for_every_task() {
        let obs: Vec<(usize, f64)> = (0..365).map(|d| (d, 1.0 + (d % 7) as f64)).collect();
        let t = precip_task("t", &obs, MeanFrom::TrainDays).unwrap();
        let r = t.resplit(MeanFrom::TrainDays, Split::Random { seed: 3 });
        assert_eq!((r.train_days.len(), r.test_days.len()), (300, 65));
        let mut all: Vec<usize> = r.train_days.iter().chain(&r.test_days).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..365).collect::<Vec<_>>());
        // not the last days, and deterministic in the seed
        assert!(r.test_days.iter().any(|&d| d < 300));
        assert_eq!(r.test_days, Split::Random { seed: 3 }.days().1);
        assert_ne!(r.test_days, Split::Random { seed: 4 }.days().1);
        // each row holds its day's input and centred profile value
        for (i, &d) in r.test_days.iter().enumerate() {
            assert_eq!(r.x_test[(i, 0)], standardize_day(d));
            assert_eq!(r.y_test[i] + r.mean, t.profile[d]);
        }
        assert!(r.y_train.sum().abs() < 1e-9);
        // resplitting by the last days gives the task back
        let back = r.resplit(MeanFrom::TrainDays, Split::LastDays);
        assert_eq!((back.y_test.clone(), back.mean), (t.y_test.clone(), t.mean));
    }

    #[test]
    fn a_series_without_rain_is_an_error() {
        let obs: Vec<(usize, f64)> = (0..365).map(|d| (d, 0.0)).collect();
        assert!(matches!(
            precip_task("dry", &obs, MeanFrom::AllDays),
            Err(DataError::Invalid(_))
        ));
    }
}
