//! Adapt a small network to eight observations of a new task and print mean ± 2σ.
//!
//! The network is linearized around its weights, $f(x;\theta') \approx J(x)\theta' + \mu(x)$,
//! with $\theta' \sim \mathcal N(0, s^2 I)$; the noise $\sigma^2$ is fitted by maximum marginal
//! likelihood and the posterior is computed by a dense Cholesky.
//!
//! Run with `cargo run -p ntk-gp --example adapt`.

use nalgebra::DMatrix;
use ntk_gp::{MeanFunction, NtkGp, NtkGpParams, Param, Strategy};
use ntk_ops::{Activation, DefaultBackend, Layer, NetworkConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A "trained" 1-16-1 tanh network (here: its seeded initialization; a real one would come
    // from `ntk_ops::onnx::OnnxNetwork::read` or `ntk_ops::checkpoint`).
    let net = NetworkConfig::new(
        &[1],
        vec![
            Layer::linear(1, 16),
            Layer::act(Activation::Tanh),
            Layer::linear(16, 1),
        ],
    )
    .init::<DefaultBackend>(0, &Default::default())?;
    // Eight observations of the new task y = sin(2x) on [-1, 0.75].
    let x = DMatrix::from_fn(8, 1, |i, _| i as f64 / 4.0 - 1.0);
    let y = x.column(0).map(|v| (2.0 * v).sin());
    let params = NtkGpParams {
        strategy: Strategy::Dense,
        noise: Param::fit_variance(0.01),
        mean: MeanFunction::Network,
        ..NtkGpParams::default()
    };
    let gp = NtkGp::new(net, &x, &y, params)?;
    println!(
        "fitted σ² = {:.3e}, log marginal likelihood {:.3}",
        gp.hyper().noise,
        gp.log_marginal_likelihood()
    );
    // Inside the data, at its edge, and beyond it: the band widens away from the data.
    let x_test = DMatrix::from_column_slice(5, 1, &[-0.5, 0.0, 0.5, 1.5, 3.0]);
    let pred = gp.predict(&x_test)?;
    let noise = gp.noise_at(&x_test)?;
    for i in 0..x_test.nrows() {
        let sd = (pred.var[i] + noise[i]).sqrt();
        let truth = (2.0 * x_test[(i, 0)]).sin();
        println!(
            "f({:+.1}) = {:+.3} ± {:.3}   (truth {:+.3})",
            x_test[(i, 0)],
            pred.mean[i],
            2.0 * sd,
            truth
        );
    }
    Ok(())
}
