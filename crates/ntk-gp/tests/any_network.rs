//! Every strategy of the GP on networks that are not MLPs (a small CNN, a residual network)
//! and on an MLP, against a float64 reference built from the explicit autodiff Jacobian and
//! a nalgebra Cholesky.
//!
//! Tolerances: `Dense` and `ParameterSpace` are direct solves (means and variances $10^{-8}$
//! relative to their largest value, log marginal likelihood $10^{-9}$ absolute). The matrix-free
//! strategies run CG to a relative residual of $10^{-12}$ with a preconditioner of full rank
//! ($r \ge \min(n, p)$), so their SLQ log-determinant is exact up to the CG residual too:
//! means and variances $10^{-7}$, log-likelihood $10^{-6}$.

use nalgebra::{DMatrix, DVector};
use ntk_gp::fit::Param;
use ntk_gp::ntk::{MatrixFreeParams, MeanFunction, NtkGp, NtkGpParams};
use ntk_gp::strategy::Strategy;
use ntk_ops::{
    Activation, DefaultBackend, JacobianOperator, JacobianParams, Layer, MlpConfig, Network,
    NetworkConfig, convert, layers,
};

type B = DefaultBackend;

const NOISE: f64 = 0.05;
const SCALE: f64 = 0.7;

/// conv(1→2, 3×3, padding 1) – ReLU – max-pool 2 – flatten – linear(8→6) – tanh – linear(6→1)
/// on 4×4 images.
fn cnn() -> Network<B> {
    NetworkConfig::new(
        &[1, 4, 4],
        vec![
            layers::Conv2d::new(1, 2, 3).with_padding([1, 1]).into(),
            Layer::act(Activation::Relu),
            Layer::max_pool2d([2, 2]),
            Layer::flatten(),
            Layer::linear(8, 6),
            Layer::act(Activation::Tanh),
            Layer::linear(6, 1),
        ],
    )
    .init(3, &Default::default())
    .unwrap()
}

/// linear(3→6) – tanh – [linear(6→6) – tanh] + identity – layer norm – linear(6→1).
fn residual() -> Network<B> {
    NetworkConfig::new(
        &[3],
        vec![
            Layer::linear(3, 6),
            Layer::act(Activation::Tanh),
            Layer::residual(vec![Layer::linear(6, 6), Layer::act(Activation::Tanh)]),
            Layer::layer_norm(1e-5),
            Layer::linear(6, 1),
        ],
    )
    .init(4, &Default::default())
    .unwrap()
}

fn mlp() -> Network<B> {
    MlpConfig::new(&[3, 8, 8, 1])
        .network()
        .init(5, &Default::default())
        .unwrap()
}

fn inputs(n: usize, d: usize, seed: usize) -> DMatrix<f64> {
    DMatrix::from_fn(n, d, |i, j| {
        (((i + 3 * seed) * 7 + j * 5) as f64 * 0.37).sin() * 1.3
    })
}

fn targets(x: &DMatrix<f64>) -> DVector<f64> {
    DVector::from_fn(x.nrows(), |i, _| {
        (x.row(i).sum() * 0.8).sin() + 0.1 * x[(i, 0)]
    })
}

/// The float64 reference: $K = s^2 JJ^\top$ from the autodiff Jacobian, the prior mean
/// $f(x)$, and Cholesky solves.
struct Reference {
    mean: DVector<f64>,
    var: DVector<f64>,
    lml: f64,
}

fn reference(net: &Network<B>, x: &DMatrix<f64>, y: &DVector<f64>, xt: &DMatrix<f64>) -> Reference {
    let dev = Default::default();
    let jac = |x: &DMatrix<f64>| {
        let j = net
            .generic_jacobian(
                convert::from_dmatrix_f64(x, &dev),
                JacobianParams::default(),
            )
            .unwrap();
        // J = J I_p, column by column of the identity.
        let p = net.n_params();
        let eye = convert::from_dmatrix_f64(&DMatrix::identity(p, p), &dev);
        convert::to_dmatrix_f64(j.jvp(eye).unwrap())
    };
    let f = |x: &DMatrix<f64>| {
        DVector::from_vec(convert::to_vec_f64(
            net.forward(convert::from_dmatrix_f64(x, &dev)),
        ))
    };
    let (j, jt) = (jac(x), jac(xt));
    let n = y.len();
    let c = &j * j.transpose() * SCALE + DMatrix::identity(n, n) * NOISE;
    let chol = c.cholesky().unwrap();
    let r = y - f(x);
    let alpha = chol.solve(&r);
    let cross = &j * jt.transpose() * SCALE;
    let mean = f(xt) + cross.tr_mul(&alpha);
    let v = chol.solve(&cross);
    let var = DVector::from_fn(xt.nrows(), |i, _| {
        SCALE * jt.row(i).norm_squared() - cross.column(i).dot(&v.column(i))
    });
    let logdet = 2.0 * chol.l().diagonal().map(f64::ln).sum();
    let lml =
        -0.5 * r.dot(&alpha) - 0.5 * logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
    Reference { mean, var, lml }
}

fn config(strategy: Strategy, n: usize) -> NtkGpParams {
    NtkGpParams {
        strategy,
        noise: Param::Fixed(NOISE),
        prior_scale: Param::Fixed(SCALE),
        mean: MeanFunction::Network,
        matrix_free: MatrixFreeParams {
            cg_tolerance: 1e-12,
            max_iters: 2000,
            precond_rank: n,
            probes: 8,
            dense_fallback_max_n: 0,
            ..MatrixFreeParams::default()
        },
        ..NtkGpParams::default()
    }
}

fn rel(a: &DVector<f64>, b: &DVector<f64>) -> f64 {
    (a - b).amax() / b.amax().max(1e-300)
}

fn check_every_strategy(name: &str, net: Network<B>, d: usize) {
    let (n, m) = (24, 7);
    let x = inputs(n, d, 0);
    let y = targets(&x);
    let xt = inputs(m, d, 9);
    let want = reference(&net, &x, &y, &xt);
    for (strategy, tol, lml_tol) in [
        (Strategy::Dense, 1e-8, 1e-9),
        (Strategy::ParameterSpace, 1e-8, 1e-9),
        (Strategy::MatrixFree, 1e-7, 1e-6),
        (Strategy::MatrixFreeParameterSpace, 1e-7, 1e-6),
    ] {
        let gp = NtkGp::new(net.clone(), &x, &y, config(strategy, n)).unwrap();
        assert_eq!(gp.choice().strategy, strategy, "{name}");
        let got = gp.predict(&xt).unwrap();
        let (em, ev) = (rel(&got.mean, &want.mean), rel(&got.var, &want.var));
        let el = (gp.log_marginal_likelihood() - want.lml).abs();
        println!("{name} {strategy:?}: mean {em:.1e}, var {ev:.1e}, lml {el:.1e}");
        assert!(em < tol, "{name} {strategy:?}: mean error {em:e}");
        assert!(ev < tol, "{name} {strategy:?}: variance error {ev:e}");
        assert!(el < lml_tol, "{name} {strategy:?}: lml error {el:e}");
    }
}

#[test]
fn a_cnn_is_adapted_by_every_strategy() {
    check_every_strategy("cnn", cnn(), 16);
}

#[test]
fn a_residual_network_is_adapted_by_every_strategy() {
    check_every_strategy("residual", residual(), 3);
}

#[test]
fn an_mlp_is_adapted_by_every_strategy() {
    check_every_strategy("mlp", mlp(), 3);
}

/// The dense strategy in f32 on a dense chain: within f32 rounding of the f64 reference (the
/// solve amplifies it by the conditioning of $A$; measured below 1e-5), and the test kernels
/// formed during the factorization (`fit_predict`) give the same numbers as `predict`.
#[test]
fn the_dense_strategy_in_f32_and_fit_predict() {
    use ntk_gp::Precision;
    let net = mlp();
    let (n, m) = (24, 7);
    let x = inputs(n, 3, 0);
    let y = targets(&x);
    let xt = inputs(m, 3, 9);
    let want = reference(&net, &x, &y, &xt);
    let params = config(Strategy::Dense, n).precision(Precision::F32);
    let (gp, pred) = params.fit_predict(net.clone(), &x, &y, &xt).unwrap();
    assert_eq!(gp.dense_report().unwrap().precision, Precision::F32);
    let (em, ev) = (rel(&pred.mean, &want.mean), rel(&pred.var, &want.var));
    let el = (gp.log_marginal_likelihood() - want.lml).abs() / want.lml.abs();
    println!("f32 dense: mean {em:.1e}, var {ev:.1e}, lml {el:.1e}");
    assert!(
        em < 1e-4 && ev < 1e-3 && el < 1e-4,
        "mean {em:e}, var {ev:e}, lml {el:e}"
    );
    assert_eq!(gp.predict(&xt).unwrap(), pred);
    // f32 is the dense strategy's: elsewhere a typed error.
    assert!(matches!(
        params.strategy(Strategy::MatrixFree).check(),
        Err(ntk_gp::GpError::NotSupported { .. })
    ));
}

/// The matrix-free parameter-space fit (exact traces) finds the dense fit's noise, prior scale
/// and constant mean.
#[test]
fn the_parameter_space_fit_agrees_with_the_dense_fit() {
    let (n, d) = (40, 16);
    let x = inputs(n, d, 2);
    let y = targets(&x).add_scalar(0.4);
    let fit = |strategy| NtkGpParams {
        noise: Param::fit_variance(0.1),
        prior_scale: Param::fit_variance(1.0),
        mean: MeanFunction::Constant(Param::Fit {
            init: 0.0,
            lower: -5.0,
            upper: 5.0,
        }),
        matrix_free: MatrixFreeParams {
            exact_trace: true,
            fit_steps: 2000,
            fit_tolerance: 1e-7,
            ..config(strategy, n).matrix_free
        },
        ..config(strategy, n)
    };
    let dense = NtkGp::new(cnn(), &x, &y, fit(Strategy::Dense)).unwrap();
    let free = NtkGp::new(cnn(), &x, &y, fit(Strategy::MatrixFreeParameterSpace)).unwrap();
    let (a, b) = (dense.hyper(), free.hyper());
    println!(
        "dense σ² {:e} s² {:e} c {:e}; param-free σ² {:e} s² {:e} c {:e}; lml {} vs {}",
        a.noise,
        a.prior_scale,
        dense.constant_mean(),
        b.noise,
        b.prior_scale,
        free.constant_mean(),
        dense.log_marginal_likelihood(),
        free.log_marginal_likelihood()
    );
    assert!((a.noise / b.noise - 1.0).abs() < 1e-3);
    assert!((a.prior_scale / b.prior_scale - 1.0).abs() < 1e-3);
    assert!((dense.constant_mean() - free.constant_mean()).abs() < 1e-3);
    assert!((dense.log_marginal_likelihood() - free.log_marginal_likelihood()).abs() < 1e-4);
}
