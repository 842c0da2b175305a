//! Jacobian products, NTK products and dense structured NTKs on the anchors'
//! models, with a GEMM in the same run for the machine's matrix-product peak.
//!
//! ```text
//! cargo bench -p ntk-ops --bench products
//! ```
//!
//! Throughput is shown as items/s with one item = one flop (multiply-add = 2),
//! so `Gitem/s` reads as GFLOP/s. Flop counts: forward $2np$, $JV$ and
//! $J^\top U$ $2npk$ each with cached factors, factors $2np(1 + o)$.

use burn::prelude::Backend;
use burn::tensor::{Distribution, Tensor};
use burn_ndarray::NdArray;
use divan::{Bencher, counter::ItemsCount};
use ntk_ops::convert::float_opts;
use ntk_ops::{
    Activation, CnnConfig, Execution, FiniteDifferenceFisher, GgnOperator, Jacobian,
    JacobianOperator, JacobianParams, Layer, Likelihood, Mlp, MlpConfig, Network, NetworkConfig,
    NtkOperator,
};

fn main() {
    divan::main();
}

const FIG4: [usize; 5] = [5, 200, 2000, 200, 1];
const SINE: [usize; 4] = [1, 40, 40, 1];
const P_FIG4: u64 = 803_601;

/// The MLP and its inputs.
fn setup<B: Backend>(widths: &[usize], n: usize) -> (Mlp<B>, Tensor<B, 2>) {
    let dev = Default::default();
    let mlp = MlpConfig::new(widths).init::<B>(0, &dev).unwrap();
    let x = Tensor::<B, 2>::random(
        [n, widths[0]],
        Distribution::Normal(0.0, 1.0),
        float_opts::<B>(&dev),
    );
    (mlp, x)
}

/// The MLP's Jacobian at its inputs (the public type, path chosen by capability).
fn jacobian<B: Backend>(widths: &[usize], n: usize) -> Jacobian<B>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (mlp, x) = setup::<B>(widths, n);
    let opts = JacobianParams {
        memory_budget: 4 << 30,
        ..Default::default()
    };
    Jacobian::new(mlp, x, opts).unwrap()
}

fn unit_column<B: Backend>(p: usize) -> Tensor<B, 2> {
    let v = Tensor::<B, 2>::random(
        [p, 1],
        Distribution::Normal(0.0, 1.0),
        float_opts::<B>(&Default::default()),
    );
    let norm = v.clone().square().sum().sqrt().unsqueeze::<2>();
    v / norm
}

fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    B::sync(&t.device()).unwrap();
    divan::black_box(t);
}

/// Square GEMM, the matrix-product peak of this backend.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1024, 2048], sample_count = 5)]
fn gemm<B: Backend>(bencher: Bencher, n: usize) {
    let dev = Default::default();
    let a = Tensor::<B, 2>::random([n, n], Distribution::Default, float_opts::<B>(&dev));
    let b = Tensor::<B, 2>::random([n, n], Distribution::Default, float_opts::<B>(&dev));
    bencher
        .counter(ItemsCount::new(2 * (n as u64).pow(3)))
        .bench(|| sync(a.clone().matmul(b.clone())));
}

/// $J v$, one column, factors cached (5-200-2000-200-1 tanh MLP).
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000, 10000], sample_count = 5, sample_size = 1)]
fn jvp<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let jac = jacobian::<B>(&FIG4, n);
    let v = unit_column::<B>(jac.n_params());
    bencher
        .counter(ItemsCount::new(2 * n as u64 * P_FIG4))
        .bench(|| sync(jac.jvp(v.clone()).unwrap()));
}

/// $J^\top u$, one column, factors cached.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000, 10000], sample_count = 5, sample_size = 1)]
fn vjp<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let jac = jacobian::<B>(&FIG4, n);
    let u = unit_column::<B>(n);
    bencher
        .counter(ItemsCount::new(2 * n as u64 * P_FIG4))
        .bench(|| sync(jac.vjp(u.clone()).unwrap()));
}

/// $K u = J (J^\top u)$, one column, factors cached.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000, 10000], sample_count = 5, sample_size = 1)]
fn ntk_product<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let op = NtkOperator::new(jacobian::<B>(&FIG4, n));
    let u = unit_column::<B>(n);
    bencher
        .counter(ItemsCount::new(4 * n as u64 * P_FIG4))
        .bench(|| sync(op.try_apply(u.clone()).unwrap()));
}

/// GGN / Fisher product $J^\top H J v$ (Gaussian, σ² = 1), factors cached: the
/// anchors' `fvp-ggn`.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000, 10000], sample_count = 5, sample_size = 1)]
fn ggn_product<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let op = GgnOperator::new(
        jacobian::<B>(&FIG4, n),
        Likelihood::Gaussian { noise_var: 1.0 },
    )
    .unwrap();
    let v = unit_column::<B>(P_FIG4 as usize);
    bencher
        .counter(ItemsCount::new(4 * n as u64 * P_FIG4))
        .bench(|| sync(op.try_apply(v.clone()).unwrap()));
}

/// GGN product from scratch: factors (forward + backward) then $J^\top H J v$,
/// nothing cached between products.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000], sample_count = 5, sample_size = 1)]
fn ggn_product_cold<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (mlp, x) = setup::<B>(&FIG4, n);
    let v = unit_column::<B>(P_FIG4 as usize);
    bencher
        .counter(ItemsCount::new(8 * n as u64 * P_FIG4))
        .bench(|| {
            let j = Jacobian::new(mlp.clone(), x.clone(), JacobianParams::default()).unwrap();
            let op = GgnOperator::new(j, Likelihood::Gaussian { noise_var: 1.0 }).unwrap();
            sync(op.try_apply(v.clone()).unwrap())
        });
}

/// The paper's finite-difference Fisher product (ε = 1e-4), one forward and one
/// backward pass at θ + εv: the anchors' `fvp-fd`.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000], sample_count = 5, sample_size = 1)]
fn fd_fisher_product<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let fd = FiniteDifferenceFisher::new(
        jacobian::<B>(&FIG4, n),
        Likelihood::Gaussian { noise_var: 1.0 },
    )
    .unwrap();
    let v = unit_column::<B>(P_FIG4 as usize);
    bencher
        .counter(ItemsCount::new(6 * n as u64 * P_FIG4))
        .bench(|| sync(fd.try_apply(v.clone()).unwrap()));
}

/// Factor computation (forward + backward per output) for all of X: a Jacobian on the
/// dense tensor path, which computes and caches them.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000], sample_count = 5, sample_size = 1)]
fn factors<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (mlp, x) = setup::<B>(&FIG4, n);
    let opts = JacobianParams {
        execution: Execution::DenseTensor,
        ..Default::default()
    };
    bencher
        .counter(ItemsCount::new(4 * n as u64 * P_FIG4))
        .bench(|| {
            let j = Jacobian::new(mlp.clone(), x.clone(), opts).unwrap();
            sync(j.outputs().unwrap())
        });
}

/// Dense structured NTK of the 1-40-40-1 sine MLP (factors included).
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [100, 1000], sample_count = 10)]
fn dense_ntk_sine<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (mlp, x) = setup::<B>(&SINE, n);
    let s: u64 = SINE.windows(2).map(|w| (w[0] + w[1]) as u64).sum();
    bencher
        .counter(ItemsCount::new(2 * (n as u64).pow(2) * s))
        .bench(|| {
            let j = Jacobian::new(mlp.clone(), x.clone(), JacobianParams::default()).unwrap();
            sync(j.ntk_matrix(&j).unwrap())
        });
}

/// Dense structured NTK of the 803k-parameter MLP at n = 1000 (factors included;
/// neural-tangents: 20.7 s in f32, NumPy structured: 0.41 s in f64).
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000], sample_count = 3, sample_size = 1)]
fn dense_ntk_fig4<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (mlp, x) = setup::<B>(&FIG4, n);
    let s: u64 = FIG4.windows(2).map(|w| (w[0] + w[1]) as u64).sum();
    bencher
        .counter(ItemsCount::new(
            2 * (n as u64).pow(2) * s + 4 * n as u64 * P_FIG4,
        ))
        .bench(|| {
            let j = Jacobian::new(mlp.clone(), x.clone(), JacobianParams::default()).unwrap();
            sync(j.ntk_matrix(&j).unwrap())
        });
}

/// The matrix products inside one $Jv$ / $J^\top u$ at n = 10000 (shapes of the
/// two big layers), to separate GEMM speed from everything else.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = ["nk_kn", "nk_kn_big_k", "tn_vjp", "tn_vjp_contig"], sample_count = 5, sample_size = 1)]
fn gemm_shapes<B: Backend>(bencher: Bencher, shape: &str) {
    let dev = Default::default();
    let n = 10_000;
    let r = |s: [usize; 2]| Tensor::<B, 2>::random(s, Distribution::Default, float_opts::<B>(&dev));
    let (a, b) = match shape {
        // jvp: A [n, 200] x W^T [200, 2000]
        "nk_kn" => (r([n, 200]), r([200, 2000])),
        // jvp: A [n, 2000] x W^T [2000, 200]
        "nk_kn_big_k" => (r([n, 2000]), r([2000, 200])),
        // vjp: delta^T [2000, n] (transposed view) x A [n, 200]
        "tn_vjp" => (r([n, 2000]).transpose(), r([n, 200])),
        _ => (r([2000, n]), r([n, 200])),
    };
    bencher
        .counter(ItemsCount::new(2 * n as u64 * 200 * 2000))
        .bench(|| sync(a.clone().matmul(b.clone())));
}

/// The generic path on the same MLP: $J^\top u$ by one backward pass through
/// burn-autodiff (here on the nested backend), for comparison with [`vjp`].
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000], sample_count = 3, sample_size = 1)]
fn generic_vjp<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (mlp, x) = setup::<B>(&FIG4, n);
    let generic = Network::from(mlp)
        .generic_jacobian(x, Default::default())
        .unwrap();
    let u = unit_column::<B>(n);
    bencher
        .counter(ItemsCount::new(2 * n as u64 * P_FIG4))
        .bench(|| sync(generic.vjp(u.clone()).unwrap()));
}

/// The generic path's $J v$: the VJP of a VJP under nested autodiff.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000], sample_count = 3, sample_size = 1)]
fn generic_jvp<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (mlp, x) = setup::<B>(&FIG4, n);
    let generic = Network::from(mlp)
        .generic_jacobian(x, Default::default())
        .unwrap();
    let v = unit_column::<B>(P_FIG4 as usize);
    bencher
        .counter(ItemsCount::new(2 * n as u64 * P_FIG4))
        .bench(|| sync(generic.jvp(v.clone()).unwrap()));
}

/// LeNet-style CNN on 1×28×28 inputs: conv 5×5 (6) → tanh → avg-pool 2 →
/// conv 5×5 (16) → tanh → avg-pool 2 → linear (10); p = 5 142.
fn lenet() -> CnnConfig {
    CnnConfig {
        input: [1, 28, 28],
        channels: [6, 16],
        kernel: 5,
        outputs: 10,
        activation: Activation::Tanh,
    }
}

const CNN_N: usize = 128;

fn lenet_inputs<B: Backend>() -> (Network<B>, Tensor<B, 2>) {
    let dev = Default::default();
    let net = lenet()
        .network_config()
        .unwrap()
        .init::<B>(0, &dev)
        .unwrap();
    let x = Tensor::<B, 2>::random(
        [CNN_N, 784],
        Distribution::Normal(0.0, 1.0),
        float_opts::<B>(&dev),
    );
    (net, x)
}

fn random_block<B: Backend>(rows: usize, k: usize) -> Tensor<B, 2> {
    Tensor::<B, 2>::random(
        [rows, k],
        Distribution::Normal(0.0, 1.0),
        float_opts::<B>(&Default::default()),
    )
}

/// CNN $J V$ (n = 128, saved factors cached), tape-free fast path, k columns.
#[divan::bench(types = [NdArray<f64>], args = [1, 8], sample_count = 5, sample_size = 1)]
fn cnn_jvp_fast<B: Backend>(bencher: Bencher, k: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (net, x) = lenet_inputs::<B>();
    let jac = Jacobian::new(net, x, JacobianParams::default()).unwrap();
    let v = random_block::<B>(jac.n_params(), k);
    bencher.bench(|| sync(jac.jvp(v.clone()).unwrap()));
}

/// CNN $J V$ on the generic path (nested autodiff, column by column, so k
/// columns cost k times one).
#[divan::bench(types = [NdArray<f64>], args = [1], sample_count = 3, sample_size = 1)]
fn cnn_jvp_generic<B: Backend>(bencher: Bencher, k: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (net, x) = lenet_inputs::<B>();
    let jac = net.generic_jacobian(x, JacobianParams::default()).unwrap();
    let v = random_block::<B>(jac.n_params(), k);
    bencher.bench(|| sync(jac.jvp(v.clone()).unwrap()));
}

/// CNN $J^\top U$ (n = 128, o = 10, saved factors cached), fast path.
#[divan::bench(types = [NdArray<f64>], args = [1, 8], sample_count = 5, sample_size = 1)]
fn cnn_vjp_fast<B: Backend>(bencher: Bencher, k: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (net, x) = lenet_inputs::<B>();
    let jac = Jacobian::new(net, x, JacobianParams::default()).unwrap();
    let u = random_block::<B>(jac.n_rows(), k);
    bencher.bench(|| sync(jac.vjp(u.clone()).unwrap()));
}

/// CNN $J^\top U$ on the generic path (one autodiff backward per column,
/// forward included; k columns cost k times one).
#[divan::bench(types = [NdArray<f64>], args = [1], sample_count = 3, sample_size = 1)]
fn cnn_vjp_generic<B: Backend>(bencher: Bencher, k: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let (net, x) = lenet_inputs::<B>();
    let jac = net.generic_jacobian(x, JacobianParams::default()).unwrap();
    let u = random_block::<B>(jac.n_rows(), k);
    bencher.bench(|| sync(jac.vjp(u.clone()).unwrap()));
}

/// An 8×8 one-channel CNN (larger than the 1097-parameter CNN of the `ntk` examples): conv 3×3
/// (8, padding 1) → ReLU → max-pool 2 → flatten → linear (32) → tanh → linear (1); p = 4 241.
fn cnn8() -> NetworkConfig {
    NetworkConfig::new(
        &[1, 8, 8],
        vec![
            ntk_ops::network::layers::conv2d::Conv2d::new(1, 8, 3)
                .with_padding([1, 1])
                .into(),
            Layer::act(Activation::Relu),
            Layer::max_pool2d([2, 2]),
            Layer::flatten(),
            Layer::linear(128, 32),
            Layer::act(Activation::Tanh),
            Layer::linear(32, 1),
        ],
    )
}

fn cnn8_jacobian<B: Backend>(n: usize) -> Jacobian<B>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let dev = Default::default();
    let net = cnn8().init::<B>(0, &dev).unwrap();
    let x = Tensor::<B, 2>::random(
        [n, 64],
        Distribution::Normal(0.0, 1.0),
        float_opts::<B>(&dev),
    );
    Jacobian::new(net, x, JacobianParams::default()).unwrap()
}

/// 8×8 CNN $J V$ (n = 1000, saved factors cached), k columns.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1, 8], sample_count = 5, sample_size = 1)]
fn cnn8_jvp<B: Backend>(bencher: Bencher, k: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let jac = cnn8_jacobian::<B>(1000);
    let v = random_block::<B>(jac.n_params(), k);
    bencher.bench(|| sync(jac.jvp(v.clone()).unwrap()));
}

/// 8×8 CNN $J^\top U$ (n = 1000), k columns.
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1, 8], sample_count = 5, sample_size = 1)]
fn cnn8_vjp<B: Backend>(bencher: Bencher, k: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let jac = cnn8_jacobian::<B>(1000);
    let u = random_block::<B>(jac.n_rows(), k);
    bencher.bench(|| sync(jac.vjp(u.clone()).unwrap()));
}

/// 8×8 CNN dense NTK at n = 1000 (factors included): the layers path's kernel, $J J^\top$
/// from the explicit Jacobian formed 16 points at a time (it fits the memory budget).
#[divan::bench(types = [NdArray<f32>, NdArray<f64>], args = [1000], sample_count = 3, sample_size = 1)]
fn cnn8_dense_ntk<B: Backend>(bencher: Bencher, n: usize)
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let jac = cnn8_jacobian::<B>(n);
    let (net, x) = (jac.network().clone(), jac.inputs());
    bencher.bench(|| {
        let j = Jacobian::new(net.clone(), x.clone(), JacobianParams::default()).unwrap();
        sync(j.ntk_matrix(&j).unwrap())
    });
}
