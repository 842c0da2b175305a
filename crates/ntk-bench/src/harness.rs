//! The experiment harness: profiles, the [`Experiment`] trait, the [`RunContext`] an experiment
//! writes through, and the registry `ntk-bench reproduce` runs from.
//!
//! An experiment is a type with a serde configuration whose [`Default`] is the paper's setting
//! and whose [`ExperimentConfig::quick`] is a small smoke-test profile. [`run`] builds the
//! configuration for a profile, checks it, writes it to `config.json`, runs the experiment and
//! writes `run.json` (what ran, with which seed, how long, which files it produced) to
//! `<root>/<name>/`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use ntk_ops::Device;

use crate::error::BenchError;

/// The seed `ntk-bench reproduce` uses unless told otherwise.
pub const DEFAULT_SEED: u64 = 0;

/// Which settings to run with: the paper's, the default of `reproduce` (the paper's, with
/// its longest sweeps cut), or a small smoke test for CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The paper's settings ([`Default`] of each configuration): `reproduce --full`.
    Full,
    /// What `reproduce` runs unless told otherwise ([`ExperimentConfig::standard`]): the
    /// paper's settings, except sweeps that would take hours, cut so that every experiment
    /// together finishes in about a quarter of an hour on a 2-core machine.
    #[default]
    Standard,
    /// A small, fast version of the same pipeline ([`ExperimentConfig::quick`]).
    Quick,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::Standard => "standard",
            Self::Quick => "quick",
        })
    }
}

/// The configuration of an experiment: [`Default`] gives the paper's settings.
pub trait ExperimentConfig:
    Serialize + DeserializeOwned + Default + Clone + fmt::Debug + Send + Sync
{
    /// The quick profile: the same pipeline at a size that runs in seconds.
    fn quick() -> Self;

    /// The standard profile (the default of `reproduce`): the paper's settings unless the
    /// experiment cuts a sweep that would take hours.
    fn standard() -> Self {
        Self::default()
    }

    /// The configuration of `profile`.
    fn for_profile(profile: Profile) -> Self {
        match profile {
            Profile::Full => Self::default(),
            Profile::Standard => Self::standard(),
            Profile::Quick => Self::quick(),
        }
    }

    /// Checks the settings once, before anything runs; the default accepts everything.
    fn validate(&self) -> Result<(), BenchError> {
        Ok(())
    }
}

/// The headline numbers of one run, returned by [`Experiment::run`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Named scalar results (e.g. `"rmse/ntk"`), in name order.
    pub metrics: BTreeMap<String, f64>,
    /// Free-text remarks (e.g. how many variances were clamped).
    pub notes: Vec<String>,
}

impl Summary {
    /// Adds a named metric.
    pub fn metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }

    /// Adds a remark.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// One experiment of the paper.
pub trait Experiment: Sized {
    /// Its name: the output folder `results/<NAME>/` and the argument of `ntk-bench reproduce`.
    const NAME: &'static str;
    /// Its configuration.
    type Config: ExperimentConfig;

    /// Builds the experiment from a configuration that passed [`ExperimentConfig::validate`].
    fn new(config: Self::Config) -> Result<Self, BenchError>;

    /// Runs it, writing every output through `ctx`.
    fn run(&self, ctx: &mut RunContext) -> Result<Summary, BenchError>;
}

/// What one run did, written to `run.json` next to its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The experiment's name.
    pub experiment: String,
    /// The profile it ran with.
    pub profile: Profile,
    /// The seed of its random numbers.
    pub seed: u64,
    /// The device it was asked to run on (`cpu`, `cuda:0`, …; records older than this field
    /// read as `cpu`).
    #[serde(default = "cpu")]
    pub device: String,
    /// The configuration it ran with.
    pub config: serde_json::Value,
    /// Its headline numbers.
    pub summary: Summary,
    /// The files it wrote, relative to its output folder, in the order written.
    pub outputs: Vec<PathBuf>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

fn cpu() -> String {
    Device::Cpu.to_string()
}

/// Where and how an experiment runs: its output folder, seed, profile and progress bars.
#[derive(Debug)]
pub struct RunContext {
    name: String,
    dir: PathBuf,
    seed: u64,
    profile: Profile,
    progress: MultiProgress,
    outputs: Vec<PathBuf>,
    device: Device,
}

impl RunContext {
    /// A context writing to `<root>/<name>/` (created if missing). Progress bars are shown
    /// only when stderr is a terminal (and never in this crate's unit tests).
    pub fn new(
        root: impl AsRef<Path>,
        name: &str,
        seed: u64,
        profile: Profile,
    ) -> Result<Self, BenchError> {
        check_name(name)?;
        let dir = root.as_ref().join(name);
        fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        let show = std::io::stderr().is_terminal() && !cfg!(test);
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Ok(Self {
            name: name.to_string(),
            dir,
            seed,
            profile,
            progress: MultiProgress::with_draw_target(target),
            outputs: Vec::new(),
            device: Device::Cpu,
        })
    }

    /// The same context on `device` (default [`Device::Cpu`]); the caller checks the device
    /// with [`Device::check`] first.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The device experiments should run their operators on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Hides all progress bars (for tests and scripted runs).
    pub fn without_progress(self) -> Self {
        self.progress.set_draw_target(ProgressDrawTarget::hidden());
        self
    }

    /// The experiment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The output folder `<root>/<name>/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The files written so far, relative to [`RunContext::dir`].
    pub fn outputs(&self) -> &[PathBuf] {
        &self.outputs
    }

    /// A generator seeded with the run's seed: the same seed gives the same numbers.
    pub fn rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.seed)
    }

    /// An independent generator for sub-stream `stream` (e.g. one per task or repetition),
    /// so that one part's draws do not shift another's.
    pub fn rng_stream(&self, stream: u64) -> StdRng {
        stream_rng(self.seed, stream)
    }

    /// A progress bar of `len` steps labelled `label`, drawn below any others; hidden when
    /// progress is hidden. Call [`ProgressBar::finish`] or drop it when done.
    pub fn progress(&self, len: u64, label: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{msg:>24} [{bar:32}] {pos}/{len} ({elapsed} elapsed, ETA {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::new(len)
            .with_style(style)
            .with_message(label.to_string());
        let bar = self.progress.add(bar);
        if !self.progress.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        bar
    }

    /// The path of output file `file` (a plain file name) in the output folder.
    pub fn path(&self, file: &str) -> Result<PathBuf, BenchError> {
        check_name(file)?;
        Ok(self.dir.join(file))
    }

    /// Records that `file` (in the output folder) was written, for [`RunRecord::outputs`].
    pub fn record(&mut self, file: &Path) {
        let rel = file.strip_prefix(&self.dir).unwrap_or(file).to_path_buf();
        if !self.outputs.contains(&rel) {
            self.outputs.push(rel);
        }
    }

    /// Writes `value` as pretty JSON to `<stem>.json`; returns the path.
    pub fn write_json<T: Serialize + ?Sized>(
        &mut self,
        stem: &str,
        value: &T,
    ) -> Result<PathBuf, BenchError> {
        let path = self.path(&format!("{stem}.json"))?;
        write_json_file(&path, value)?;
        self.record(&path);
        Ok(path)
    }

    /// Writes a CSV table to `<stem>.csv`: one header row, then `rows`, each with as many
    /// cells as `headers` (else [`BenchError::Csv`]). Cells are written with [`Display`]
    /// (`f64` as the shortest string that reads back exactly).
    ///
    /// [`Display`]: std::fmt::Display
    pub fn write_csv<R, C>(
        &mut self,
        stem: &str,
        headers: &[&str],
        rows: R,
    ) -> Result<PathBuf, BenchError>
    where
        R: IntoIterator,
        R::Item: IntoIterator<Item = C>,
        C: fmt::Display,
    {
        let path = self.path(&format!("{stem}.csv"))?;
        let csv_err = |source| BenchError::Csv {
            path: path.clone(),
            source,
        };
        let mut w = csv::Writer::from_path(&path).map_err(csv_err)?;
        w.write_record(headers).map_err(csv_err)?;
        for row in rows {
            w.write_record(row.into_iter().map(|c| c.to_string()))
                .map_err(csv_err)?;
        }
        w.flush().map_err(|e| BenchError::io(&path, e))?;
        self.record(&path);
        Ok(path)
    }

    /// Writes `text` to `file` (a plain file name with its extension); returns the path.
    pub fn write_text(&mut self, file: &str, text: &str) -> Result<PathBuf, BenchError> {
        let path = self.path(file)?;
        fs::write(&path, text).map_err(|e| BenchError::io(&path, e))?;
        self.record(&path);
        Ok(path)
    }
}

/// The generator of sub-stream `stream` of `seed` (see [`RunContext::rng_stream`]).
pub fn stream_rng(seed: u64, stream: u64) -> StdRng {
    // Mix the stream into the seed with a SplitMix64 step, so streams 0, 1, 2, … of nearby
    // seeds do not coincide; `seed_from_u64` then expands the 64 bits into a full seed.
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

fn write_json_file<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), BenchError> {
    let file = fs::File::create(path).map_err(|e| BenchError::io(path, e))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    w.write_all(b"\n")
        .and_then(|()| w.flush())
        .map_err(|e| BenchError::io(path, e))
}

/// Fails unless `name` is a plain, non-empty file name (no separators, not `.` or `..`).
fn check_name(name: &str) -> Result<(), BenchError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.contains('\0');
    if plain {
        Ok(())
    } else {
        Err(BenchError::InvalidName(name.to_string()))
    }
}

/// Runs experiment `E` with `config` in `ctx`: validates the configuration, writes it to
/// `config.json`, runs, and writes `run.json`.
pub fn run_with<E: Experiment>(
    ctx: &mut RunContext,
    config: E::Config,
) -> Result<RunRecord, BenchError> {
    config.validate()?;
    ctx.write_json("config", &config)?;
    let config_json = serde_json::to_value(&config).map_err(|source| BenchError::Json {
        path: ctx.dir().join("config.json"),
        source,
    })?;
    let experiment = E::new(config)?;
    let start = Instant::now();
    let summary = experiment.run(ctx)?;
    let mut record = RunRecord {
        experiment: E::NAME.to_string(),
        profile: ctx.profile(),
        seed: ctx.seed(),
        device: ctx.device().to_string(),
        config: config_json,
        summary,
        outputs: Vec::new(),
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    let run_path = ctx.path("run.json")?;
    ctx.record(&run_path);
    record.outputs = ctx.outputs().to_vec();
    write_json_file(&run_path, &record)?;
    Ok(record)
}

/// Runs experiment `E` with the configuration of `ctx`'s profile (see [`run_with`]).
pub fn run<E: Experiment>(ctx: &mut RunContext) -> Result<RunRecord, BenchError> {
    run_with::<E>(ctx, E::Config::for_profile(ctx.profile()))
}

/// Runs experiment `E` with the profile's configuration overridden by the fields of `overrides`
/// (a JSON object; see [`run_with`]). An unknown field or a wrong type is [`BenchError::Invalid`].
pub fn run_json<E: Experiment>(
    ctx: &mut RunContext,
    overrides: serde_json::Value,
) -> Result<RunRecord, BenchError> {
    let config = config_with_overrides::<E::Config>(ctx.profile(), overrides)?;
    run_with::<E>(ctx, config)
}

/// The configuration of `profile` with the fields of `overrides` (a JSON object) replaced.
/// An unknown field or a wrong type is [`BenchError::Invalid`].
pub fn config_with_overrides<T: ExperimentConfig>(
    profile: Profile,
    overrides: serde_json::Value,
) -> Result<T, BenchError> {
    let mut base = serde_json::to_value(T::for_profile(profile))
        .map_err(|e| BenchError::invalid("configuration", e.to_string()))?;
    let (Some(obj), serde_json::Value::Object(over)) = (base.as_object_mut(), overrides) else {
        return Err(BenchError::invalid(
            "configuration",
            "must be a JSON object",
        ));
    };
    for (k, v) in over {
        if !obj.contains_key(&k) {
            return Err(BenchError::invalid(
                "configuration",
                format!("unknown field `{k}`"),
            ));
        }
        obj.insert(k, v);
    }
    serde_json::from_value(base).map_err(|e| BenchError::invalid("configuration", e.to_string()))
}

/// An experiment in the registry: its name, a one-line description and how to run it.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The experiment's name ([`Experiment::NAME`]).
    pub name: &'static str,
    /// One line on what it reproduces.
    pub about: &'static str,
    /// Runs it with the configuration of the context's profile.
    pub run: fn(&mut RunContext) -> Result<RunRecord, BenchError>,
    /// Runs it with a configuration read from JSON (fields left out keep the profile's value).
    pub run_json: fn(&mut RunContext, serde_json::Value) -> Result<RunRecord, BenchError>,
    /// How long it is expected to take, printed before a run.
    pub expected: Expected,
}

/// Seconds an experiment is expected to take in each profile, measured on a 2-vCPU AMD EPYC
/// VM without AVX-512 (the slower of the two machines the project measures on) on
/// 2026-12-07: `standard` and `full` in a release build (`ntk-bench reproduce`,
/// 20:06–20:22 UTC; the scaling study's standard time is that run's less its n = 5000
/// rows), `quick` in CI's test build. The scaling study's `full` time is an estimate: its
/// n = 50 000 rows took 932 s and 893 s on 2026-11-30, and the rows to n = 20 000 and the
/// widths to 2000 about half an hour more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    /// `--quick`.
    pub quick: f64,
    /// The default.
    pub standard: f64,
    /// `--full`.
    pub full: f64,
}

impl Expected {
    /// The seconds expected for `profile`.
    pub fn seconds(&self, profile: Profile) -> f64 {
        match profile {
            Profile::Quick => self.quick,
            Profile::Standard => self.standard,
            Profile::Full => self.full,
        }
    }
}

/// `seconds` as a person says it: `40 s`, `6 min`, `2.5 h`.
pub fn format_duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("about", &self.about)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The registry entry of experiment `E`.
    pub const fn of<E: Experiment>(about: &'static str, expected: Expected) -> Self {
        Self {
            name: E::NAME,
            about,
            run: run::<E>,
            run_json: run_json::<E>,
            expected,
        }
    }
}

/// The experiments `ntk-bench reproduce` can run, in the paper's order; names must match
/// [`crate::EXPERIMENTS`].
pub const REGISTRY: &[Entry] = &[
    Entry::of::<crate::sinusoid_transfer::Sinusoid>(
        "sinusoid few-shot transfer (Figures 1, 7, 8, 9)",
        Expected {
            quick: 25.0,
            standard: 105.0,
            full: 105.0,
        },
    ),
    Entry::of::<crate::precipitation::Precipitation>(
        "precipitation transfer across weather stations (Figures 2, 10, 11)",
        Expected {
            quick: 15.0,
            standard: 70.0,
            full: 70.0,
        },
    ),
    Entry::of::<crate::spatial_transfer::SpatialTransfer>(
        "spatial transfer across maps: malaria 2012 -> 2016, offline precipitation stand-in (Figure 3)",
        Expected {
            quick: 1.0,
            standard: 395.0,
            full: 395.0,
        },
    ),
    Entry::of::<crate::scaling::Scaling>(
        "time of the log marginal likelihood against n and width (Figure 4)",
        Expected {
            quick: 2.0,
            standard: 180.0,
            full: 4200.0,
        },
    ),
    Entry::of::<crate::fisher::Fisher>(
        "finite-difference vs exact Fisher-vector products: accuracy and speed (Figures 5, 6)",
        Expected {
            quick: 1.0,
            standard: 40.0,
            full: 40.0,
        },
    ),
];

/// The registry entry named `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct CountConfig {
        draws: usize,
    }

    impl Default for CountConfig {
        fn default() -> Self {
            Self { draws: 100 }
        }
    }

    impl ExperimentConfig for CountConfig {
        fn quick() -> Self {
            Self { draws: 3 }
        }
        fn validate(&self) -> Result<(), BenchError> {
            if self.draws == 0 {
                return Err(BenchError::invalid("draws", "must be at least 1"));
            }
            Ok(())
        }
    }

    struct Count(CountConfig);

    impl Experiment for Count {
        const NAME: &'static str = "count";
        type Config = CountConfig;
        fn new(config: CountConfig) -> Result<Self, BenchError> {
            Ok(Self(config))
        }
        fn run(&self, ctx: &mut RunContext) -> Result<Summary, BenchError> {
            let mut rng = ctx.rng();
            let bar = ctx.progress(self.0.draws as u64, "drawing");
            let xs: Vec<f64> = (0..self.0.draws)
                .map(|_| {
                    bar.inc(1);
                    rng.random::<f64>()
                })
                .collect();
            bar.finish();
            ctx.write_json("draws", &xs)?;
            ctx.write_csv(
                "draws",
                &["i", "x"],
                xs.iter().enumerate().map(|(i, x)| [i as f64, *x]),
            )?;
            Ok(Summary::default()
                .metric("sum", xs.iter().sum())
                .note("uniform"))
        }
    }

    #[test]
    fn run_writes_config_outputs_and_record() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = RunContext::new(root.path(), "count", 7, Profile::Quick)
            .unwrap()
            .without_progress();
        let record = run::<Count>(&mut ctx).unwrap();
        assert_eq!(record.profile, Profile::Quick);
        assert_eq!(record.device, "cpu");
        assert_eq!(record.config["draws"], 3);
        let names: Vec<_> = record.outputs.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            names,
            ["config.json", "draws.json", "draws.csv", "run.json"]
        );
        for n in names {
            assert!(root.path().join("count").join(n).is_file());
        }
        let csv = fs::read_to_string(root.path().join("count/draws.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.starts_with("i,x\n0,0."));
        let back: RunRecord =
            serde_json::from_str(&fs::read_to_string(root.path().join("count/run.json")).unwrap())
                .unwrap();
        // serde_json reads floats to within an ulp (exact reading needs `float_roundtrip`).
        assert_eq!(back.outputs, record.outputs);
        assert_eq!(back.device, "cpu");
        assert_eq!(back.config, record.config);
        assert!((back.summary.metrics["sum"] - record.summary.metrics["sum"]).abs() < 1e-15);
    }

    #[test]
    fn same_seed_same_numbers() {
        let root = tempfile::tempdir().unwrap();
        let sums: Vec<f64> = [7, 7, 8]
            .iter()
            .map(|&seed| {
                let mut ctx = RunContext::new(root.path(), "count", seed, Profile::Quick).unwrap();
                run::<Count>(&mut ctx).unwrap().summary.metrics["sum"]
            })
            .collect();
        assert_eq!(sums[0], sums[1]);
        assert_ne!(sums[0], sums[2]);
        let a: f64 = stream_rng(7, 0).random();
        let b: f64 = stream_rng(7, 1).random();
        assert_ne!(a, b);
        assert_eq!(a, stream_rng(7, 0).random::<f64>());
    }

    #[test]
    fn invalid_config_and_names_are_typed_errors() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = RunContext::new(root.path(), "count", 0, Profile::Full).unwrap();
        let err = run_with::<Count>(&mut ctx, CountConfig { draws: 0 }).unwrap_err();
        assert!(matches!(err, BenchError::Invalid { what: "draws", .. }));
        for bad in ["", "..", "a/b", "a\\b"] {
            assert!(matches!(
                ctx.write_text(bad, "x"),
                Err(BenchError::InvalidName(_))
            ));
        }
        assert!(RunContext::new(root.path(), "../up", 0, Profile::Full).is_err());
        let ragged = ctx.write_csv("ragged", &["a", "b"], [vec![1.0], vec![1.0, 2.0]]);
        assert!(matches!(ragged, Err(BenchError::Csv { .. })));
    }

    #[test]
    fn profile_serializes_lowercase() {
        assert_eq!(serde_json::to_string(&Profile::Quick).unwrap(), "\"quick\"");
        assert_eq!(Profile::Full.to_string(), "full");
        assert_eq!(
            CountConfig::for_profile(Profile::Full),
            CountConfig::default()
        );
        assert_eq!(Profile::Standard.to_string(), "standard");
        // A configuration that cuts nothing runs the paper's settings by default.
        assert_eq!(
            CountConfig::for_profile(Profile::Standard),
            CountConfig::default()
        );
    }

    /// `reproduce` runs the standard profile unless told otherwise, and every experiment
    /// together is expected to finish within a quarter of an hour on a 2-core machine.
    #[test]
    fn the_main_job_is_expected_to_finish_in_a_quarter_of_an_hour() {
        assert_eq!(Profile::default(), Profile::Standard);
        let total = |p| REGISTRY.iter().map(|e| e.expected.seconds(p)).sum::<f64>();
        assert!(
            total(Profile::Standard) < 900.0,
            "{}",
            total(Profile::Standard)
        );
        assert!(total(Profile::Quick) < total(Profile::Standard));
        assert!(total(Profile::Standard) < total(Profile::Full));
        let scaling = crate::scaling::ScalingConfig::for_profile(Profile::Standard);
        assert_eq!(scaling.ns.iter().max(), Some(&2000));
        let full = crate::scaling::ScalingConfig::for_profile(Profile::Full);
        assert_eq!(full.ns.iter().max(), Some(&50_000));
        assert_eq!(format_duration(42.4), "42 s");
        assert_eq!(format_duration(790.0), "13 min");
        assert_eq!(format_duration(9000.0), "2.5 h");
    }
}
