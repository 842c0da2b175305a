//! One conformance suite for every layer kind, every network and every execution path, run
//! unchanged on every backend: `NdArray<f64>` and `NdArray<f32>` always, `Cuda<f32>` with the
//! `cuda` feature and `NTK_TEST_CUDA=1`.
//!
//! For each network (each layer kind alone in a minimal network, an MLP per activation, the
//! heteroscedastic head, LeNet, a small ResNet), each execution path that applies to it
//! ([`Execution`]) and a perturbed $\theta$ (norm scales away from one, random running
//! statistics, so that every term of every rule is exercised), [`measure`] takes, relative:
//! - **adjoint**: $\lvert\langle J V, U\rangle - \langle V, J^\top U\rangle\rvert /
//!   (\lVert J V\rVert \lVert U\rVert)$;
//! - **jvp_fd**: $J V$ against central differences $(f(\theta + h v) - f(\theta - h v))/2h$
//!   of the `f64` network, $h = 10^{-6}$ (truncation $O(h^2)$, rounding $O(\epsilon/h)$:
//!   about $10^{-10}$ in `f64`);
//! - **vjp_autodiff**: $J^\top U$ against burn-autodiff on the same backend;
//! - **ntk**: the NTK $J J^\top$ of [`Jacobian::ntk_matrix`] (structured on the dense paths)
//!   against $J J^\top$ from the explicit [`Jacobian::jacobian`];
//! - **diagonal**: [`Jacobian::ntk_diagonal`] against the squared rows of $J$;
//! - **paths**: $J V$ and $J^\top U$ of this path against the layers path.
//!
//! Bounds ([`F64`], [`F32`]) keep about ten times head-room over the largest error measured
//! over the whole suite (`cargo test -p ntk-ops conformance -- --nocapture` prints them;
//! 2026-12-06, burn-ndarray): in `f64` adjoint $4.6 \cdot 10^{-16}$, autodiff
//! $2.5 \cdot 10^{-16}$, NTK $4.1 \cdot 10^{-16}$, diagonal $3.0 \cdot 10^{-16}$, paths
//! $2.9 \cdot 10^{-16}$ (rounding), differences $1.9 \cdot 10^{-10}$ (their own
//! $O(h^2 + \epsilon/h)$ error); in `f32` adjoint $1.3 \cdot 10^{-7}$, differences
//! $3.6 \cdot 10^{-7}$, autodiff $1.2 \cdot 10^{-6}$, NTK $2.0 \cdot 10^{-7}$, diagonal
//! $3.2 \cdot 10^{-7}$, paths $1.4 \cdot 10^{-7}$: `f32` rounding
//! ($\epsilon = 6 \cdot 10^{-8}$) grown by depth and width.

use burn::prelude::Backend;
use nalgebra::RealField;

use crate::activation::Activation;
use crate::convert::{tensor_from_f64, to_vec_f64};
use crate::jacobian::{JacobianOperator, JacobianParams};
use crate::network::layers::conv2d::Conv2d;
use crate::network::{Layer, Network, NetworkConfig};
use crate::operator::{Execution, Jacobian};
use crate::rng::SplitMix64;
use crate::{CnnConfig, Head, MlpConfig};

/// The errors of one (network, path, backend) case, all relative.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Errors {
    pub adjoint: f64,
    pub jvp_fd: f64,
    pub vjp_autodiff: f64,
    pub ntk: f64,
    pub diagonal: f64,
    pub paths: f64,
}

impl Errors {
    fn fields(&self) -> [(&'static str, f64); 6] {
        [
            ("adjoint", self.adjoint),
            ("jvp_fd", self.jvp_fd),
            ("vjp_autodiff", self.vjp_autodiff),
            ("ntk", self.ntk),
            ("diagonal", self.diagonal),
            ("paths", self.paths),
        ]
    }

    /// The entrywise maximum.
    fn max(self, other: Self) -> Self {
        Self {
            adjoint: self.adjoint.max(other.adjoint),
            jvp_fd: self.jvp_fd.max(other.jvp_fd),
            vjp_autodiff: self.vjp_autodiff.max(other.vjp_autodiff),
            ntk: self.ntk.max(other.ntk),
            diagonal: self.diagonal.max(other.diagonal),
            paths: self.paths.max(other.paths),
        }
    }
}

/// Bounds for `f64` backends.
pub const F64: Errors = Errors {
    adjoint: 1e-14,
    jvp_fd: 3e-9,
    vjp_autodiff: 1e-14,
    ntk: 1e-14,
    diagonal: 1e-14,
    paths: 1e-14,
};

/// Bounds for `f32` backends.
pub const F32: Errors = Errors {
    adjoint: 2e-6,
    jvp_fd: 5e-6,
    vjp_autodiff: 1e-5,
    ntk: 3e-6,
    diagonal: 3e-6,
    paths: 2e-6,
};

/// $\lVert a - b\rVert / \lVert b\rVert$.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    crate::testing::rel_err(a, b)
}

/// The networks of the suite, by name: every layer kind alone, then whole networks.
pub fn networks() -> Vec<(&'static str, NetworkConfig)> {
    let conv = |ci, co, k| Layer::conv2d(ci, co, k);
    let head = |c: usize, h: usize, w: usize| vec![Layer::flatten(), Layer::linear(c * h * w, 2)];
    let image = |layers: Vec<Layer>, tail: Vec<Layer>| {
        NetworkConfig::new(&[2, 6, 6], layers.into_iter().chain(tail).collect())
    };
    let mut nets = vec![
        (
            "linear",
            NetworkConfig::new(&[3], vec![Layer::linear(3, 2)]),
        ),
        ("conv2d", image(vec![conv(2, 3, 3)], head(3, 4, 4))),
        (
            "conv2d strided padded",
            image(
                vec![
                    Conv2d::new(2, 3, 3)
                        .with_stride([2, 1])
                        .with_padding([1, 2])
                        .into(),
                ],
                head(3, 3, 8),
            ),
        ),
        (
            "conv2d dilated grouped",
            image(
                vec![
                    Conv2d::new(2, 4, 2)
                        .with_dilation([2, 3])
                        .with_groups(2)
                        .with_padding([1, 0])
                        .into(),
                ],
                head(4, 6, 3),
            ),
        ),
        (
            "avg_pool2d",
            image(
                vec![conv(2, 2, 1), Layer::avg_pool2d([2, 3])],
                head(2, 3, 2),
            ),
        ),
        (
            "max_pool2d",
            image(
                vec![conv(2, 2, 1), Layer::max_pool2d([3, 2])],
                head(2, 2, 3),
            ),
        ),
        ("flatten", image(vec![conv(2, 1, 1)], head(1, 6, 6))),
        (
            "batch_norm2d",
            image(vec![conv(2, 3, 1), Layer::batch_norm2d(3)], head(3, 6, 6)),
        ),
        (
            "layer_norm",
            NetworkConfig::new(
                &[4],
                vec![
                    Layer::linear(4, 5),
                    Layer::layer_norm(1e-5),
                    Layer::linear(5, 2),
                ],
            ),
        ),
        (
            "residual",
            NetworkConfig::new(
                &[4],
                vec![
                    Layer::residual(vec![Layer::linear(4, 4), Layer::act(Activation::Tanh)]),
                    Layer::linear(4, 1),
                ],
            ),
        ),
        (
            "heteroscedastic",
            MlpConfig::new(&[3, 5, 2])
                .with_head(Head::Heteroscedastic { min_scale: 1e-3 })
                .network(),
        ),
    ];
    for (name, act) in [
        ("mlp tanh", Activation::Tanh),
        ("mlp relu", Activation::Relu),
        ("mlp elu", Activation::Elu),
        ("mlp gelu", Activation::Gelu),
        ("mlp sigmoid", Activation::Sigmoid),
        ("mlp softplus", Activation::Softplus),
    ] {
        nets.push((
            name,
            MlpConfig::new(&[2, 7, 5, 3]).with_activation(act).network(),
        ));
    }
    let lenet = CnnConfig {
        input: [1, 10, 10],
        channels: [3, 4],
        kernel: 3,
        outputs: 2,
        activation: Activation::Tanh,
    };
    nets.push(("lenet", lenet.network_config().expect("a valid CNN")));
    nets.push((
        "resnet",
        NetworkConfig::new(
            &[2, 6, 6],
            vec![
                Conv2d::new(2, 4, 3).with_padding([1, 1]).into(),
                Layer::batch_norm2d(4),
                Layer::act(Activation::Relu),
                Layer::residual(vec![
                    Conv2d::new(4, 4, 3).with_padding([1, 1]).into(),
                    Layer::batch_norm2d(4),
                    Layer::act(Activation::Softplus),
                    Conv2d::new(4, 4, 3).with_padding([1, 1]).into(),
                ]),
                Layer::max_pool2d([2, 2]),
                Layer::layer_norm(1e-5),
                Layer::avg_pool2d([3, 3]),
                Layer::flatten(),
                Layer::linear(4, 3),
            ],
        ),
    ));
    nets
}

/// Ends a random convolutional network of `channels` maps of `side`² pixels: `pool` 1 adds
/// a 2×2 average pooling, 2 a max pooling, then Flatten and Linear to `outputs`; false when
/// pooling leaves no pixel.
pub(crate) fn pooled_head(
    layers: &mut Vec<Layer>,
    pool: usize,
    side: usize,
    channels: usize,
    outputs: usize,
) -> bool {
    let side = match pool {
        1 => {
            layers.push(Layer::avg_pool2d([2, 2]));
            side / 2
        }
        2 => {
            layers.push(Layer::max_pool2d([2, 2]));
            side / 2
        }
        _ => side,
    };
    layers.push(Layer::flatten());
    layers.push(Layer::linear(channels * side * side, outputs));
    side > 0
}

/// $\theta$ and buffers: PyTorch's initialization plus noise, running variances in
/// $[0.5, 1.5]$.
pub(crate) fn values(cfg: &NetworkConfig, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let plan = cfg.plan().expect("a valid network");
    let mut rng = SplitMix64::new(seed);
    let theta = plan
        .init_params(&mut rng)
        .into_iter()
        .map(|t| t + 0.3 * rng.normal())
        .collect();
    let bufs = plan
        .buffers
        .specs()
        .iter()
        .flat_map(|s| {
            let var = s.name.ends_with("running_var");
            (0..s.numel())
                .map(|_| {
                    if var {
                        rng.uniform_in(0.5, 1.5)
                    } else {
                        0.3 * rng.normal()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (theta, bufs)
}

/// The errors of `cfg` on backend `B` with every path that applies, maximized over paths.
pub fn measure<B: Backend>(cfg: &NetworkConfig, seed: u64, device: &B::Device) -> Errors
where
    B::FloatElem: RealField + Copy,
{
    type R = burn_ndarray::NdArray<f64>;
    let (theta, bufs) = values(cfg, seed);
    let net: Network<B> = cfg.with_params(&theta, &bufs, device).unwrap();
    let (n, k, d) = (3, 2, cfg.n_inputs());
    let mut rng = SplitMix64::new(seed + 1);
    let xs = rng.normal_vec(n * d);
    let x = tensor_from_f64::<B>(xs.clone(), n, d, device);
    let (p, rows) = (net.n_params(), n * net.n_outputs());
    let vs = rng.normal_vec(p * k);
    let us = rng.normal_vec(rows * k);
    let (v, u) = (
        tensor_from_f64::<B>(vs.clone(), p, k, device),
        tensor_from_f64::<B>(us.clone(), rows, k, device),
    );
    let layers = Jacobian::new(
        net.clone(),
        x.clone(),
        JacobianParams {
            execution: Execution::Layers,
            ..Default::default()
        },
    )
    .unwrap();
    let (jv_layers, jtu_layers) = (
        to_vec_f64(layers.jvp(v.clone()).unwrap()),
        to_vec_f64(layers.vjp(u.clone()).unwrap()),
    );
    // references: central differences of the f64 network, autodiff on this backend
    let h = 1e-6;
    let fd: Vec<f64> = (0..k)
        .map(|c| {
            let at = |s: f64| {
                let th: Vec<f64> = theta
                    .iter()
                    .enumerate()
                    .map(|(i, t)| t + s * vs[i * k + c])
                    .collect();
                let x = tensor_from_f64::<R>(xs.clone(), n, d, &Default::default());
                to_vec_f64(
                    cfg.with_params::<R>(&th, &bufs, &Default::default())
                        .unwrap()
                        .forward(x),
                )
            };
            let (a, b) = (at(h), at(-h));
            a.iter()
                .zip(&b)
                .map(|(a, b)| (a - b) / (2.0 * h))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .concat();
    let autodiff = to_vec_f64(
        net.generic_jacobian(x.clone(), Default::default())
            .unwrap()
            .vjp(u.clone())
            .unwrap(),
    );
    let mut worst = Errors::default();
    for execution in [
        Execution::Auto,
        Execution::DenseHost,
        Execution::DenseTensor,
        Execution::Layers,
    ] {
        let options = JacobianParams {
            execution,
            ..Default::default()
        };
        let Ok(jac) = Jacobian::new(net.clone(), x.clone(), options) else {
            continue; // the path does not apply to this network or backend
        };
        let jv = jac.jvp(v.clone()).unwrap();
        let jtu = jac.vjp(u.clone()).unwrap();
        let (jv, jtu) = (to_vec_f64(jv), to_vec_f64(jtu));
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let norm = |a: &[f64]| dot(a, a).sqrt();
        // column-major [n·o, k] from the row-major tensors: ⟨Jv, u⟩ summed over all entries
        let adjoint = (dot(&jv, &us) - dot(&vs, &jtu)).abs() / (norm(&jv) * norm(&us));
        let jv_by_column: Vec<f64> = (0..k)
            .flat_map(|c| (0..rows).map(move |r| (r, c)))
            .map(|(r, c)| jv[r * k + c])
            .collect();
        let j = to_vec_f64(jac.jacobian().unwrap());
        let jjt: Vec<f64> = (0..rows)
            .flat_map(|a| (0..rows).map(move |b| (a, b)))
            .map(|(a, b)| dot(&j[a * p..(a + 1) * p], &j[b * p..(b + 1) * p]))
            .collect();
        let diag: Vec<f64> = (0..rows).map(|a| jjt[a * rows + a]).collect();
        let e = Errors {
            adjoint,
            jvp_fd: rel(&jv_by_column, &fd),
            vjp_autodiff: rel(&jtu, &autodiff),
            ntk: rel(&to_vec_f64(jac.ntk_matrix(&jac).unwrap()), &jjt),
            diagonal: rel(&to_vec_f64(jac.ntk_diagonal().unwrap()), &diag),
            paths: rel(&jv, &jv_layers).max(rel(&jtu, &jtu_layers)),
        };
        worst = worst.max(e);
    }
    worst
}

/// Runs the suite on `B`, prints the largest errors, and asserts the bounds.
pub fn run<B: Backend>(device: &B::Device, bounds: &Errors, label: &str)
where
    B::FloatElem: RealField + Copy,
{
    let mut worst = Errors::default();
    for (i, (name, cfg)) in networks().into_iter().enumerate() {
        let e = measure::<B>(&cfg, 100 + i as u64, device);
        for ((what, got), (_, bound)) in e.fields().into_iter().zip(bounds.fields()) {
            assert!(
                got <= bound,
                "{label} {name}: {what} = {got:.2e} > {bound:.0e}"
            );
        }
        worst = worst.max(e);
    }
    let line: Vec<String> = worst
        .fields()
        .iter()
        .map(|(what, e)| format!("{what} {e:.1e}"))
        .collect();
    println!("{label}: largest errors: {}", line.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn conformance_ndarray_f64() {
        run::<burn_ndarray::NdArray<f64>>(&Default::default(), &F64, "ndarray f64");
    }

    #[test]
    fn conformance_ndarray_f32() {
        run::<burn_ndarray::NdArray<f32>>(&Default::default(), &F32, "ndarray f32");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn conformance_cuda_f32() {
        if std::env::var("NTK_TEST_CUDA").as_deref() != Ok("1") {
            println!("conformance_cuda_f32: skipped (set NTK_TEST_CUDA=1 on a machine with a GPU)");
            return;
        }
        crate::device::probe_cuda(0).expect("NTK_TEST_CUDA=1 needs a usable cuda:0");
        run::<crate::device::CudaBackend>(&Default::default(), &F32, "cuda f32");
    }

    /// Every network the suite lists compiles, and the execution paths apply where they
    /// should: a dense chain takes the host path on burn-ndarray, anything else the layers.
    #[test]
    fn paths_follow_capability() {
        type B = burn_ndarray::NdArray<f64>;
        let dev = Default::default();
        for (name, cfg) in networks() {
            let net = cfg.init::<B>(0, &dev).unwrap();
            let x = tensor_from_f64::<B>(vec![0.1; 2 * cfg.n_inputs()], 2, cfg.n_inputs(), &dev);
            let jac = Jacobian::new(net, x, Default::default()).unwrap();
            let dense = name.starts_with("mlp") || name == "heteroscedastic" || name == "linear";
            let want = if dense {
                Execution::DenseHost
            } else {
                Execution::Layers
            };
            assert_eq!(jac.execution(), want, "{name}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Random MLPs and CNNs (widths, activations, kernel, stride, padding, dilation,
        /// groups, pooling) on `f64`: the whole suite's checks within its bounds.
        #[test]
        fn random_networks_conform(
            mlp in any::<bool>(), width in 1usize..6, depth in 1usize..4, act in 0usize..6,
            c in 1usize..3, groups in 1usize..3, kern in 1usize..4, stride in 1usize..3,
            pad in 0usize..2, dil in 1usize..3, pool in 0usize..3, seed in 0u64..1000,
        ) {
            let act = Activation::ALL[act];
            let cfg = if mlp {
                let mut widths = vec![2];
                widths.extend(std::iter::repeat_n(width, depth));
                widths.push(2);
                MlpConfig::new(&widths).with_activation(act).network()
            } else {
                prop_assume!(pad <= dil * (kern - 1));
                let co = 2 * groups;
                let ci = c * groups;
                let side = (7 + 2 * pad - dil * (kern - 1) - 1) / stride + 1;
                let mut layers = vec![
                    Conv2d::new(ci, co, kern)
                        .with_stride([stride; 2])
                        .with_padding([pad; 2])
                        .with_dilation([dil; 2])
                        .with_groups(groups)
                        .into(),
                    Layer::act(act),
                ];
                prop_assume!(pooled_head(&mut layers, pool, side, co, 2));
                NetworkConfig::new(&[ci, 7, 7], layers)
            };
            let e = measure::<burn_ndarray::NdArray<f64>>(&cfg, seed, &Default::default());
            for ((what, got), (_, bound)) in e.fields().into_iter().zip(F64.fields()) {
                prop_assert!(got <= bound, "{what} = {got:.2e} for {cfg:?}");
            }
        }
    }
}
