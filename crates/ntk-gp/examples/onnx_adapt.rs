//! Adapt a network exported from PyTorch (ONNX) to a new task and print mean ± 2σ per point.
//!
//! ```text
//! cargo run --release -p ntk-gp --example onnx_adapt -- NET.onnx TRAIN.csv TEST.csv
//! ```
//!
//! Each CSV has a header, one column per input feature (an image flattened in C, H, W order)
//! and the target last. Without arguments it adapts the 8×8 CNN in `tests/fixtures/pytorch`.

use std::error::Error;
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};
use ntk_gp::{MeanFunction, NtkGpParams, Param, Strategy};
use ntk_ops::DefaultBackend;
use ntk_ops::onnx::OnnxNetwork;

fn main() -> Result<(), Box<dyn Error>> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pytorch");
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let model = args.next().unwrap_or_else(|| fixtures.join("cnn.onnx"));
    let train = args
        .next()
        .unwrap_or_else(|| fixtures.join("cnn.train.csv"));
    let test = args.next().unwrap_or_else(|| fixtures.join("cnn.test.csv"));

    // The trained network: layers and weights from the ONNX graph.
    let net = OnnxNetwork::read(&model)?.network::<DefaultBackend>(&Default::default())?;
    let (x, y) = read_csv(&train)?;
    let (x_test, y_test) = read_csv(&test)?;

    // σ² and s² by maximum marginal likelihood; μ(x) = f(x; θ), the trained network.
    let gp = NtkGpParams::default()
        .strategy(Strategy::Auto)
        .noise(Param::fit_variance(0.01))
        .prior_scale(Param::fit_variance(1.0))
        .mean(MeanFunction::Network)
        .fit(net, &x, &y)?;
    let hyper = gp.hyper();
    println!(
        "{}: σ² = {:.3e}, s² = {:.3e} ({})",
        model.display(),
        hyper.noise,
        hyper.prior_scale,
        gp.choice().reason
    );

    let pred = gp.predict(&x_test)?;
    let noise = gp.noise_at(&x_test)?;
    for i in 0..x_test.nrows() {
        let sd = (pred.var[i] + noise[i]).sqrt();
        println!(
            "point {i:>2}: {:+.3} ± {:.3}   (observed {:+.3})",
            pred.mean[i],
            2.0 * sd,
            y_test[i]
        );
    }
    Ok(())
}

/// Inputs (all columns but the last) and targets (the last column) of a CSV file with a header.
fn read_csv(path: &Path) -> Result<(DMatrix<f64>, DVector<f64>), Box<dyn Error>> {
    let mut rows = Vec::new();
    for record in csv::Reader::from_path(path)?.records() {
        let row = record?
            .iter()
            .map(str::parse::<f64>)
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    let d = rows.first().map_or(0, |r| r.len().saturating_sub(1));
    if d == 0 || rows.iter().any(|r| r.len() != d + 1) {
        return Err(format!("{}: needs rows of inputs and a target", path.display()).into());
    }
    let x = DMatrix::from_fn(rows.len(), d, |i, j| rows[i][j]);
    let y = DVector::from_fn(rows.len(), |i, _| rows[i][d]);
    Ok((x, y))
}
