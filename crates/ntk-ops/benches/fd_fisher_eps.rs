//! Error of the finite-difference Fisher-vector product (paper, Appendix D)
//! against the exact GGN product $J^\top H J v$, as a function of $\varepsilon$,
//! for the 5-200-2000-200-1 tanh MLP at n = 1000, unit-norm v, Gaussian
//! likelihood (σ² = 1). The exact reference is computed in f64; the finite
//! difference in f64 and in f32.
//!
//! ```text
//! cargo bench -p ntk-ops --bench fd_fisher_eps
//! ```

use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use ntk_ops::convert::{tensor_from_f64, to_vec_f64};
use ntk_ops::rng::SplitMix64;
use ntk_ops::{FdScheme, FiniteDifferenceFisher, GgnOperator, Jacobian, Likelihood, MlpConfig};

const WIDTHS: [usize; 5] = [5, 200, 2000, 200, 1];
const N: usize = 1000;
const LIK: Likelihood = Likelihood::Gaussian { noise_var: 1.0 };

fn setup<B: Backend>(theta: &[f64], x: &[f64], v: &[f64]) -> (Jacobian<B>, Tensor<B, 2>)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let dev = Default::default();
    let mlp = MlpConfig::new(&WIDTHS)
        .with_params::<B>(theta, &dev)
        .unwrap();
    let xt = tensor_from_f64(x.to_vec(), N, WIDTHS[0], &dev);
    let jac = Jacobian::new(mlp, xt, Default::default()).unwrap();
    (jac, tensor_from_f64(v.to_vec(), v.len(), 1, &dev))
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn fd<B: Backend>(theta: &[f64], x: &[f64], v: &[f64], eps: f64, scheme: FdScheme) -> Vec<f64>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (jac, vt) = setup::<B>(theta, x, v);
    let op = FiniteDifferenceFisher::new(jac, LIK)
        .unwrap()
        .with_eps(eps)
        .unwrap()
        .with_scheme(scheme);
    to_vec_f64(op.try_apply(vt).unwrap())
}

fn main() {
    let cfg = MlpConfig::new(&WIDTHS);
    let theta = cfg
        .init::<NdArray<f64>>(0, &Default::default())
        .unwrap()
        .flatten_f64();
    let mut rng = SplitMix64::new(1);
    let x = rng.normal_vec(N * WIDTHS[0]);
    let mut v = rng.normal_vec(theta.len());
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);

    let (jac, vt) = setup::<NdArray<f64>>(&theta, &x, &v);
    let exact = to_vec_f64(GgnOperator::new(jac, LIK).unwrap().try_apply(vt).unwrap());

    println!("| eps | f64 forward | f64 central | f32 forward |");
    println!("|---|---|---|---|");
    for e in [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8] {
        let f64_fwd = rel_err(
            &fd::<NdArray<f64>>(&theta, &x, &v, e, FdScheme::Forward),
            &exact,
        );
        let f64_cen = rel_err(
            &fd::<NdArray<f64>>(&theta, &x, &v, e, FdScheme::Central),
            &exact,
        );
        let f32_fwd = rel_err(
            &fd::<NdArray<f32>>(&theta, &x, &v, e, FdScheme::Forward),
            &exact,
        );
        println!("| {e:.0e} | {f64_fwd:.2e} | {f64_cen:.2e} | {f32_fwd:.2e} |");
    }
}
