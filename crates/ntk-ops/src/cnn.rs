//! A small LeNet-style convolutional network, as a [`NetworkConfig`] builder.
//!
//! Architecture, as the PyTorch `nn.Sequential` whose `state_dict` it reads:
//! `0: Conv2d(c, c1, k)`, `1: act`, `2: AvgPool2d(2)`, `3: Conv2d(c1, c2, k)`,
//! `4: act`, `5: AvgPool2d(2)`, `6: Flatten`, `7: Linear(c2·h2·w2, o)`. The flat
//! parameters follow that order (`0.weight` `[c1, c, k, k]`, `0.bias`, `3.weight`,
//! `3.bias`, `7.weight` `[o, in]`, `7.bias`). Inputs are rows of $X$ holding the image
//! flattened as `[c, h, w]`. The tests check the [`Network`] against an independent
//! hand-written burn module of the same architecture under autodiff.

use burn::prelude::Backend;
use burn::tensor::Tensor;
use nalgebra::RealField;

use crate::activation::Activation;
use crate::error::{OpsError, Result};
use crate::jacobian::JacobianParams;
use crate::network::{Layer, Network, NetworkConfig};
use crate::operator::Jacobian;
use crate::params::ParamLayout;

/// Shape of a small LeNet-style CNN: `0: Conv2d(c, c1, k)`, `1: act`, `2: AvgPool2d(2)`,
/// `3: Conv2d(c1, c2, k)`, `4: act`, `5: AvgPool2d(2)`, `6: Flatten`, `7: Linear(c2·h2·w2, o)`
/// as PyTorch's `nn.Sequential` (stride 1, no padding), inputs flattened `[c, h, w]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CnnConfig {
    /// Input `[channels, height, width]`.
    pub input: [usize; 3],
    /// Channels of the two convolutions.
    pub channels: [usize; 2],
    /// Square kernel size of both convolutions (stride 1, no padding).
    pub kernel: usize,
    /// Number of outputs $o$.
    pub outputs: usize,
    /// Nonlinearity after each convolution.
    pub activation: Activation,
}

impl CnnConfig {
    /// Spatial size after conv → pool → conv → pool, if positive.
    fn final_hw(&self) -> Option<[usize; 2]> {
        let step = |s: usize| s.checked_sub(self.kernel - 1).map(|s| s / 2);
        let h = step(step(self.input[1])?)?;
        let w = step(step(self.input[2])?)?;
        (h > 0 && w > 0).then_some([h, w])
    }

    /// Number of input features $c h w$ per row of $X$.
    pub fn n_inputs(&self) -> usize {
        self.input.iter().product()
    }

    /// The flat-parameter layout (`state_dict` order).
    pub fn layout(&self) -> Result<ParamLayout> {
        self.network_config()?.layout()
    }

    /// PyTorch's default initialization (uniform on $\pm 1/\sqrt{\text{fan-in}}$), seeded.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<Network<B>> {
        self.network_config()?.init(seed, device)
    }

    /// The CNN holding the flat parameters `theta`.
    pub fn with_params<B: Backend>(&self, theta: &[f64], device: &B::Device) -> Result<Network<B>> {
        self.network_config()?.with_params(theta, &[], device)
    }

    /// The network configuration (identical layer indices, hence identical flat-parameter
    /// layout).
    pub fn network_config(&self) -> Result<NetworkConfig> {
        let [c, _, _] = self.input;
        let [c1, c2] = self.channels;
        let k = self.kernel;
        if k == 0 || c == 0 || c1 == 0 || c2 == 0 || self.outputs == 0 {
            return Err(OpsError::InvalidConfig("CNN sizes must be positive".into()));
        }
        let [h, w] = self.final_hw().ok_or_else(|| {
            OpsError::InvalidConfig(format!("input {:?} too small for kernel {k}", self.input))
        })?;
        let pool = Layer::avg_pool2d([2, 2]);
        Ok(NetworkConfig::new(
            &self.input,
            vec![
                Layer::conv2d(c, c1, k),
                Layer::act(self.activation),
                pool.clone(),
                Layer::conv2d(c1, c2, k),
                Layer::act(self.activation),
                pool,
                Layer::flatten(),
                Layer::linear(c2 * h * w, self.outputs),
            ],
        ))
    }

    /// The Jacobian of the CNN with parameters `theta` at `x` (`[n, c·h·w]`).
    pub fn jacobian<B: Backend>(
        &self,
        theta: &[f64],
        x: Tensor<B, 2>,
        options: JacobianParams,
    ) -> Result<Jacobian<B>>
    where
        B::FloatElem: RealField + Copy,
    {
        Jacobian::new(self.with_params::<B>(theta, &x.device())?, x, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::jacobian::JacobianOperator;
    use crate::rng::SplitMix64;
    use crate::testing::{TestBackend, dot, rel_err};
    use burn::module::{Module, Param};
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    /// 2×2 average pooling with stride 2 (odd trailing rows/columns dropped, as
    /// PyTorch's `AvgPool2d(2)`), from reshapes and sums: burn-autodiff 0.21 cannot
    /// differentiate its own `avg_pool2d` backward, which nested autodiff needs.
    fn avg_pool_2x2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let (h2, w2) = (h / 2, w / 2);
        x.narrow(2, 0, 2 * h2)
            .narrow(3, 0, 2 * w2)
            .reshape([n, c, h2, 2, w2, 2])
            .sum_dim(5)
            .sum_dim(3)
            .reshape([n, c, h2, w2])
            .mul_scalar(0.25)
    }

    /// The test oracle: the same CNN as a hand-written burn module; parameters in visit order
    /// = PyTorch `state_dict` order.
    #[derive(Module, Debug)]
    struct Cnn<B: Backend> {
        conv1_weight: Param<Tensor<B, 4>>,
        conv1_bias: Param<Tensor<B, 1>>,
        conv2_weight: Param<Tensor<B, 4>>,
        conv2_bias: Param<Tensor<B, 1>>,
        fc_weight: Param<Tensor<B, 2>>,
        fc_bias: Param<Tensor<B, 1>>,
        #[module(skip)]
        config: CnnConfig,
    }

    impl<B: Backend> Cnn<B> {
        /// The module holding the flat parameters `theta` of `config`.
        fn from_params(config: &CnnConfig, theta: &[f64], device: &B::Device) -> Self {
            let layout = config.layout().unwrap();
            let t = crate::convert::tensor1_from_f64::<B>(theta.to_vec(), device);
            let s = layout.specs();
            let slice = |i: usize| t.clone().narrow(0, s[i].offset, s[i].numel());
            let dims4 = |i: usize| [s[i].shape[0], s[i].shape[1], s[i].shape[2], s[i].shape[3]];
            Cnn {
                conv1_weight: Param::from_tensor(slice(0).reshape(dims4(0))),
                conv1_bias: Param::from_tensor(slice(1)),
                conv2_weight: Param::from_tensor(slice(2).reshape(dims4(2))),
                conv2_bias: Param::from_tensor(slice(3)),
                fc_weight: Param::from_tensor(slice(4).reshape([s[4].shape[0], s[4].shape[1]])),
                fc_bias: Param::from_tensor(slice(5)),
                config: config.clone(),
            }
        }

        /// $f(X)$, `[n, o]`, for rows of $X$ holding flattened `[c, h, w]` images.
        pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
            let n = x.dims()[0];
            let [c, h, w] = self.config.input;
            let act = self.config.activation;
            let opts = || ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
            let z = conv2d(
                x.reshape([n, c, h, w]),
                self.conv1_weight.val(),
                Some(self.conv1_bias.val()),
                opts(),
            );
            let z = avg_pool_2x2(act.apply(z));
            let z = conv2d(
                z,
                self.conv2_weight.val(),
                Some(self.conv2_bias.val()),
                opts(),
            );
            let z = avg_pool_2x2(act.apply(z));
            let flat = z.flatten::<2>(1, 3);
            flat.matmul(self.fc_weight.val().transpose()) + self.fc_bias.val().unsqueeze::<2>()
        }
    }

    fn config() -> CnnConfig {
        CnnConfig {
            input: [1, 10, 10],
            channels: [3, 4],
            kernel: 3,
            outputs: 2,
            activation: Activation::Tanh,
        }
    }

    /// The oracle's autodiff Jacobian at `theta`.
    fn oracle(
        cfg: &CnnConfig,
        theta: &[f64],
        x: Tensor<TestBackend, 2>,
    ) -> impl JacobianOperator<TestBackend> {
        type N = crate::autodiff::Nested<TestBackend>;
        let module = Cnn::<N>::from_params(cfg, theta, &x.device());
        crate::autodiff::AutodiffJacobian::new(module, Cnn::forward, x).unwrap()
    }

    #[test]
    fn layout_matches_pytorch_sequential() {
        let l = config().layout().unwrap();
        let names: Vec<_> = l.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"
            ]
        );
        assert_eq!(l.get("7.weight").unwrap().shape, vec![2, 4]);
        assert_eq!(l.n_params(), 27 + 3 + 108 + 4 + 8 + 2);
        let dev = Default::default();
        let net = config().init::<TestBackend>(0, &dev).unwrap();
        assert_eq!(net.n_params(), l.n_params());
        assert!(matches!(
            CnnConfig {
                input: [1, 5, 5],
                ..config()
            }
            .layout(),
            Err(OpsError::InvalidConfig(_))
        ));
    }

    #[test]
    fn cnn_jacobian_matches_finite_differences_and_is_adjoint() {
        let cfg = config();
        let dev = Default::default();
        let theta = to_vec_f64(cfg.init::<TestBackend>(1, &dev).unwrap().flatten());
        let mut rng = SplitMix64::new(2);
        let n = 3;
        let x = tensor_from_f64(rng.normal_vec(n * 100), n, 100, &dev);
        let jac = cfg
            .jacobian::<TestBackend>(&theta, x.clone(), Default::default())
            .unwrap();
        let p = theta.len();
        assert_eq!((jac.n_params(), jac.n_outputs()), (p, 2));
        let v = rng.normal_vec(p);
        let jv = to_vec_f64(jac.jvp(tensor_from_f64(v.clone(), p, 1, &dev)).unwrap());
        let h = 1e-5;
        let shifted = |s: f64| {
            let th: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t + s * d).collect();
            cfg.with_params::<TestBackend>(&th, &dev)
                .unwrap()
                .forward(x.clone())
        };
        let fd = to_vec_f64((shifted(h) - shifted(-h)).div_scalar(2.0 * h));
        assert!(rel_err(&jv, &fd) < 1e-7, "{}", rel_err(&jv, &fd));
        let u = tensor_from_f64(rng.normal_vec(n * 2), n * 2, 1, &dev);
        let vt = tensor_from_f64(v, p, 1, &dev);
        let lhs = dot(&jac.jvp(vt.clone()).unwrap(), &u);
        let rhs = dot(&vt, &jac.vjp(u).unwrap());
        assert!((lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()));
    }

    /// The network against the independent hand-written module under autodiff.
    #[test]
    fn network_matches_the_hand_written_module_for_every_activation() {
        let dev = Default::default();
        for (i, act) in Activation::ALL.into_iter().enumerate() {
            let cfg = CnnConfig {
                input: [2, 11, 10],
                activation: act,
                ..config()
            };
            let theta = to_vec_f64(cfg.init::<TestBackend>(i as u64, &dev).unwrap().flatten());
            let mut rng = SplitMix64::new(10 + i as u64);
            let n = 4;
            let x = tensor_from_f64(rng.normal_vec(n * 220), n, 220, &dev);
            let fast = cfg
                .jacobian::<TestBackend>(&theta, x.clone(), Default::default())
                .unwrap();
            let generic = oracle(&cfg, &theta, x);
            let (p, r) = (fast.n_params(), fast.n_rows());
            assert_eq!((generic.n_params(), generic.n_rows()), (p, r));
            assert_eq!(fast.network().layout(), &cfg.layout().unwrap());
            let v = tensor_from_f64(rng.normal_vec(p * 2), p, 2, &dev);
            let u = tensor_from_f64(rng.normal_vec(r * 2), r, 2, &dev);
            for (what, a, b) in [
                (
                    "outputs",
                    fast.outputs().unwrap(),
                    generic.outputs().unwrap(),
                ),
                ("jvp", fast.jvp(v.clone()).unwrap(), generic.jvp(v).unwrap()),
                ("vjp", fast.vjp(u.clone()).unwrap(), generic.vjp(u).unwrap()),
            ] {
                let e = rel_err(&to_vec_f64(a), &to_vec_f64(b));
                assert!(e < 1e-10, "{act:?} {what}: {e}");
            }
        }
    }
}
