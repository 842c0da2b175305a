//! The harness end to end: the RBF-GP baseline on a few sinusoid tasks writes its
//! configuration, JSON, CSV, a figure (PNG and SVG) and a report.

use std::fs;
use std::path::Path;

use ntk_bench::harness::{self, Experiment, ExperimentConfig, Profile, RunContext};
use ntk_bench::rbf_baseline::{SinusoidRbf, SinusoidRbfConfig};

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn run(root: &Path, seed: u64) -> harness::RunRecord {
    let mut ctx = RunContext::new(root, SinusoidRbf::NAME, seed, Profile::Quick)
        .unwrap()
        .without_progress();
    harness::run::<SinusoidRbf>(&mut ctx).unwrap()
}

#[test]
fn rbf_baseline_end_to_end() {
    let root = tempfile::tempdir().unwrap();
    let record = run(root.path(), 3);
    let dir = root.path().join("sinusoid-rbf");
    let names: Vec<String> = record
        .outputs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for expected in [
        "config.json",
        "tasks.json",
        "metrics.csv",
        "predictions.csv",
        "fits.png",
        "fits.svg",
        "report.md",
        "run.json",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
        let len = fs::metadata(dir.join(expected)).unwrap().len();
        assert!(len > 100, "{expected} has only {len} bytes");
    }

    // Quick profile: 4 tasks in 2 columns of 560 × 320 panels (420 for the axes, 140 for the
    // legend beside them), plus the title strip.
    let png = fs::read(dir.join("fits.png")).unwrap();
    assert_eq!(png_size(&png), (1120, 680));
    assert!(
        png.len() > 20_000,
        "PNG suspiciously small: {} bytes",
        png.len()
    );
    let svg = fs::read_to_string(dir.join("fits.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("RBF GP on sinusoid tasks"));

    let csv = fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4);
    assert!(csv.starts_with("task,amplitude,frequency,phase,rmse,nlpd,coverage95\n"));
    let tasks: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("tasks.json")).unwrap()).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 4);

    let report = fs::read_to_string(dir.join("report.md")).unwrap();
    for link in [
        "(fits.png)",
        "(fits.svg)",
        "(metrics.csv)",
        "(predictions.csv)",
        "(tasks.json)",
    ] {
        assert!(report.contains(link), "report lacks {link}");
    }
    assert!(report.contains("--example sinusoid_rbf -- quick 3"));

    // A GP fitted to 10 nearly noise-free points of a smooth sine is a sane predictor.
    let m = &record.summary.metrics;
    assert!(m["rmse"].is_finite() && m["rmse"] < 5.0, "{m:?}");
    assert!((0.0..=1.0).contains(&m["coverage95"]));
    assert_eq!(
        record.config,
        serde_json::to_value(SinusoidRbfConfig::quick()).unwrap()
    );
}

#[test]
fn same_seed_same_results() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(a.path(), 11);
    run(b.path(), 11);
    for file in ["tasks.json", "metrics.csv", "predictions.csv", "report.md"] {
        let read = |root: &Path| fs::read(root.join("sinusoid-rbf").join(file)).unwrap();
        assert_eq!(read(a.path()), read(b.path()), "{file} differs");
    }
}
