//! Parameter-space operators: the Gram matrix $J^\top J$, the generalized
//! Gauss–Newton / Fisher matrix $J^\top H J$, and the paper's finite-difference
//! Fisher-vector product.

use std::marker::PhantomData;

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::activation::softmax;
use krylov::LinearOperator;

use crate::block::TensorBlock;
use crate::dense::MlpJacobian;
use crate::error::{OpsError, Result};
use crate::host_jacobian::HostJacobian;
use crate::jacobian::{JacobianOperator, JacobianParams, check_param_block};
use crate::network::{Layer, Network, NetworkJacobian};
use crate::operator::{Execution, Jacobian};

/// The likelihood $p(y \mid f)$ on the network outputs $f$, which fixes the
/// output Hessian $H = \mathbb{E}_y[-\nabla_f^2 \log p(y \mid f)]$ of the Fisher.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Likelihood {
    /// $y \sim \mathcal N(f, \sigma^2 I)$: $H = I / \sigma^2$.
    Gaussian {
        /// The noise variance $\sigma^2$.
        noise_var: f64,
    },
    /// $y \sim \mathcal N(\mu, \sigma^2)$ with outputs $f = (\mu, \sigma)$ (a
    /// [`Head::Heteroscedastic`](crate::Head::Heteroscedastic) model): $H = \operatorname{diag}(1/\sigma^2, 2/\sigma^2)$
    /// per point.
    HeteroscedasticGaussian,
    /// $y \sim \operatorname{Categorical}(\operatorname{softmax}(f))$ with logits $f$:
    /// $H = \operatorname{diag}(p) - p p^\top$ per point.
    Categorical,
}

impl Likelihood {
    fn check(&self, n_outputs: usize) -> Result<()> {
        match *self {
            Self::Gaussian { noise_var } if !(noise_var > 0.0 && noise_var.is_finite()) => Err(
                OpsError::InvalidConfig("Gaussian noise variance must be positive".into()),
            ),
            Self::HeteroscedasticGaussian if n_outputs != 2 => Err(OpsError::InvalidConfig(
                "the heteroscedastic likelihood needs outputs (mean, scale)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// $H U$ per point for outputs `f` (`[n, o]`) and a function-space block `u`
    /// (`[n·o, k]`).
    pub fn apply_output_hessian<B: Backend>(
        &self,
        f: &Tensor<B, 2>,
        u: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let [n, o] = f.dims();
        let k = u.dims()[1];
        match *self {
            Self::Gaussian { noise_var } => u.div_scalar(noise_var),
            Self::HeteroscedasticGaussian => {
                let var = f.clone().narrow(1, 1, 1).square();
                let w = Tensor::cat(vec![var.clone().recip(), var.recip().mul_scalar(2.0)], 1);
                (u.reshape([n, o, k]) * w.reshape([n, o, 1])).reshape([n * o, k])
            }
            Self::Categorical => {
                let p = softmax(f.clone(), 1).reshape([n, o, 1]);
                let u3 = u.reshape([n, o, k]);
                let pu = u3 * p.clone();
                let s = pu.clone().sum_dim(1); // [n, 1, k]
                (pu - p * s).reshape([n * o, k])
            }
        }
    }

    /// $\nabla_{f'} \operatorname{KL}(p(\cdot \mid f) \,\|\, p(\cdot \mid f'))$, `[n, o]`.
    ///
    /// Gaussian: $(f' - f)/\sigma^2$. Heteroscedastic:
    /// $\partial_{\mu'} = (\mu' - \mu)/\sigma'^2$,
    /// $\partial_{\sigma'} = 1/\sigma' - (\sigma^2 + (\mu - \mu')^2)/\sigma'^3$.
    /// Categorical: $\operatorname{softmax}(f') - \operatorname{softmax}(f)$.
    pub fn kl_gradient<B: Backend>(&self, f: &Tensor<B, 2>, f_new: &Tensor<B, 2>) -> Tensor<B, 2> {
        match *self {
            Self::Gaussian { noise_var } => (f_new.clone() - f.clone()).div_scalar(noise_var),
            Self::HeteroscedasticGaussian => {
                let (mu, s) = (f.clone().narrow(1, 0, 1), f.clone().narrow(1, 1, 1));
                let (mu2, s2) = (f_new.clone().narrow(1, 0, 1), f_new.clone().narrow(1, 1, 1));
                let diff = mu2 - mu;
                let var2 = s2.clone().square();
                let g_mu = diff.clone() / var2.clone();
                let g_s = s2.clone().recip() - (s.square() + diff.square()) / (var2 * s2);
                Tensor::cat(vec![g_mu, g_s], 1)
            }
            Self::Categorical => softmax(f_new.clone(), 1) - softmax(f.clone(), 1),
        }
    }
}

/// The Gram matrix $J^\top J$ ($p \times p$) as an operator: $V \mapsto J^\top (J V)$.
pub struct GramOperator<B: Backend, J> {
    jac: J,
    _backend: PhantomData<B>,
}

impl<B: Backend, J: JacobianOperator<B>> GramOperator<B, J> {
    /// $J^\top J$ for the Jacobian `jac`.
    pub fn new(jac: J) -> Self {
        Self {
            jac,
            _backend: PhantomData,
        }
    }

    /// $J^\top J V$ with checked shapes.
    pub fn try_apply(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        self.jac.vjp(self.jac.jvp(v)?)
    }
}

impl<B: Backend, J: JacobianOperator<B>> LinearOperator<TensorBlock<B>> for GramOperator<B, J>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.jac.n_params()
    }
    fn ncols(&self) -> usize {
        self.jac.n_params()
    }
    fn apply(&self, x: &TensorBlock<B>) -> TensorBlock<B> {
        TensorBlock::new(
            self.try_apply(x.tensor().clone())
                .unwrap_or_else(|e| panic!("GramOperator::apply: {e}")),
        )
    }
    fn diagonal(&self) -> Option<Vec<B::FloatElem>> {
        self.jac.gram_diagonal().map(crate::convert::to_vec_elem)
    }
}

/// The generalized Gauss–Newton matrix, equal to the Fisher for these
/// likelihoods: $G = J^\top H J$, summed over the data points.
pub struct GgnOperator<B: Backend, J> {
    jac: J,
    likelihood: Likelihood,
    outputs: Tensor<B, 2>,
}

impl<B: Backend, J: JacobianOperator<B>> GgnOperator<B, J> {
    /// $J^\top H J$ for `jac` under `likelihood` ($H$ is evaluated once, at $f(X)$).
    pub fn new(jac: J, likelihood: Likelihood) -> Result<Self> {
        likelihood.check(jac.n_outputs())?;
        let outputs = jac.outputs()?;
        Ok(Self {
            jac,
            likelihood,
            outputs,
        })
    }

    /// $J^\top H J V$ with checked shapes.
    pub fn try_apply(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let jv = self.jac.jvp(v)?;
        self.jac
            .vjp(self.likelihood.apply_output_hessian(&self.outputs, jv))
    }
}

impl<B: Backend, J: JacobianOperator<B>> LinearOperator<TensorBlock<B>> for GgnOperator<B, J>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.jac.n_params()
    }
    fn ncols(&self) -> usize {
        self.jac.n_params()
    }
    fn apply(&self, x: &TensorBlock<B>) -> TensorBlock<B> {
        TensorBlock::new(
            self.try_apply(x.tensor().clone())
                .unwrap_or_else(|e| panic!("GgnOperator::apply: {e}")),
        )
    }
}

/// Difference scheme of the finite-difference Fisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FdScheme {
    /// The paper's one-sided $g(\theta + \varepsilon v)/\varepsilon$ (error $O(\varepsilon)$).
    #[default]
    Forward,
    /// $(g(\theta + \varepsilon v) - g(\theta - \varepsilon v)) / (2\varepsilon)$ (error
    /// $O(\varepsilon^2)$, twice the cost).
    Central,
}

/// The paper's Fisher-vector product (Appendix D):
/// $F v \approx \nabla_{\theta'} \operatorname{KL}(p(y \mid \theta) \,\|\, p(y \mid \theta'))
/// \big|_{\theta' = \theta + \varepsilon v} / \varepsilon$,
/// one forward and one backward pass per column (the gradient of the KL at
/// $\theta' = \theta$ is zero). The gradient is taken by the hand-written
/// backward pass: $J(\theta')^\top \nabla_{f'} \operatorname{KL}$.
///
/// The truncation error grows with $\varepsilon \lVert v \rVert$: use unit-norm directions.
pub struct FiniteDifferenceFisher<B: Backend> {
    net: Network<B>,
    x: Tensor<B, 2>,
    options: JacobianParams,
    likelihood: Likelihood,
    eps: f64,
    scheme: FdScheme,
    outputs: Tensor<B, 2>,
}

impl<B: Backend> FiniteDifferenceFisher<B>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    /// The finite-difference Fisher of the model and data of `jac`, with
    /// $\varepsilon = 10^{-4}$ (the paper's default) and the forward scheme.
    pub fn new(jac: Jacobian<B>, likelihood: Likelihood) -> Result<Self> {
        likelihood.check(jac.n_outputs())?;
        let heteroscedastic_head = matches!(
            jac.network().config().layers.last(),
            Some(Layer::Heteroscedastic(_))
        );
        if likelihood == Likelihood::HeteroscedasticGaussian && !heteroscedastic_head {
            return Err(OpsError::InvalidConfig(
                "the heteroscedastic likelihood needs a heteroscedastic head".into(),
            ));
        }
        let outputs = jac.outputs()?;
        Ok(Self {
            net: jac.network().clone(),
            x: jac.inputs(),
            options: jac.params(),
            likelihood,
            eps: 1e-4,
            scheme: FdScheme::Forward,
            outputs,
        })
    }

    /// Sets the step $\varepsilon > 0$.
    pub fn with_eps(mut self, eps: f64) -> Result<Self> {
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(OpsError::InvalidConfig("eps must be positive".into()));
        }
        self.eps = eps;
        Ok(self)
    }

    /// Sets the difference scheme.
    pub fn with_scheme(mut self, scheme: FdScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The step $\varepsilon$.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// $\nabla_{\theta'} \operatorname{KL}$ at $\theta' = \theta + t v$ for one direction `v` (`[p]`).
    ///
    /// The path follows the Jacobian's options: a dense chain on a host-memory backend runs
    /// the host path (factors once, the outputs from them, one product); elsewhere the dense
    /// tensor path, and any other network (or [`Execution::Layers`](crate::Execution::Layers))
    /// the layers path, both uncached, with the outputs of each chunk's forward pass feeding
    /// its gradient.
    fn kl_grad_at(&self, v: Tensor<B, 1>, t: f64) -> Result<Tensor<B, 2>> {
        let net = self.net.perturbed(v, t)?;
        let opts = JacobianParams {
            cache_factors: false,
            ..self.options
        };
        let o = self.net.n_outputs();
        let u_of = |start: usize, out: &Tensor<B, 2>| {
            let m = out.dims()[0];
            let f = self.outputs.clone().narrow(0, start, m);
            self.likelihood.kl_gradient(&f, out).reshape([m * o, 1])
        };
        let dense = match self.options.execution {
            Execution::Layers => None,
            _ => net.dense_chain(),
        };
        let host = matches!(
            self.options.execution,
            Execution::Auto | Execution::DenseHost
        ) && crate::device::computes_on_host::<B>();
        match dense {
            Some(mlp) if host => {
                let jac = HostJacobian::new(mlp, self.x.clone(), self.options)?;
                let out = jac.outputs()?;
                jac.vjp(u_of(0, &out))
            }
            Some(mlp) => MlpJacobian::new(mlp, self.x.clone(), opts)?.vjp_with(1, u_of),
            None => NetworkJacobian::new(net, self.x.clone(), opts)?.vjp_with(1, u_of),
        }
    }

    /// $F V$ column by column, with checked shapes.
    pub fn try_apply(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.net.n_params())?;
        let [p, k] = v.dims();
        let cols = (0..k)
            .map(|c| {
                let vc = v.clone().narrow(1, c, 1).reshape([p]);
                Ok(match self.scheme {
                    FdScheme::Forward => self.kl_grad_at(vc, self.eps)?.div_scalar(self.eps),
                    FdScheme::Central => (self.kl_grad_at(vc.clone(), self.eps)?
                        - self.kl_grad_at(vc, -self.eps)?)
                    .div_scalar(2.0 * self.eps),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(cols, 1))
    }
}

impl<B: Backend> LinearOperator<TensorBlock<B>> for FiniteDifferenceFisher<B>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.net.n_params()
    }
    fn ncols(&self) -> usize {
        self.net.n_params()
    }
    fn apply(&self, x: &TensorBlock<B>) -> TensorBlock<B> {
        TensorBlock::new(
            self.try_apply(x.tensor().clone())
                .unwrap_or_else(|e| panic!("FiniteDifferenceFisher::apply: {e}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::mlp::{Head, MlpConfig};
    use crate::rng::SplitMix64;
    use crate::testing::{TestBackend, rel_err};

    fn jac(widths: &[usize], head: Head, n: usize) -> Jacobian<TestBackend> {
        let dev = Default::default();
        let mlp = MlpConfig::new(widths)
            .with_activation(Activation::Tanh)
            .with_head(head)
            .init::<TestBackend>(3, &dev)
            .unwrap();
        let mut rng = SplitMix64::new(11);
        let x = tensor_from_f64(rng.normal_vec(n * widths[0]), n, widths[0], &dev);
        Jacobian::new(mlp, x, Default::default()).unwrap()
    }

    /// Dense $J^\top H J$ with $H$ assembled per point on the host.
    fn dense_ggn(j: &Jacobian<TestBackend>, lik: Likelihood) -> Tensor<TestBackend, 2> {
        let jm = j.jacobian().unwrap();
        let r = j.n_rows();
        let f = j.outputs().unwrap();
        let eye_vals = (0..r * r)
            .map(|q| if q % (r + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let eye = tensor_from_f64::<TestBackend>(eye_vals, r, r, &j.device());
        let h = lik.apply_output_hessian(&f, eye);
        jm.clone().transpose().matmul(h.matmul(jm))
    }

    fn unit_block(p: usize, k: usize, seed: u64) -> Tensor<TestBackend, 2> {
        let mut rng = SplitMix64::new(seed);
        let mut v = rng.normal_vec(p * k);
        for c in 0..k {
            let norm: f64 = (0..p).map(|i| v[i * k + c].powi(2)).sum::<f64>().sqrt();
            (0..p).for_each(|i| v[i * k + c] /= norm);
        }
        tensor_from_f64(v, p, k, &Default::default())
    }

    #[test]
    fn gram_and_ggn_match_dense_references() {
        let cases = [
            (
                vec![2, 7, 5, 1],
                Head::Plain,
                Likelihood::Gaussian { noise_var: 0.3 },
            ),
            (
                vec![2, 7, 2],
                Head::Heteroscedastic { min_scale: 1e-5 },
                Likelihood::HeteroscedasticGaussian,
            ),
            (vec![3, 6, 4], Head::Plain, Likelihood::Categorical),
        ];
        for (widths, head, lik) in cases {
            let j = jac(&widths, head, 8);
            let p = j.n_params();
            let v = unit_block(p, 3, 4);
            let ggn = GgnOperator::new(j.clone(), lik).unwrap();
            let got = to_vec_f64(ggn.try_apply(v.clone()).unwrap());
            let want = to_vec_f64(dense_ggn(&j, lik).matmul(v.clone()));
            assert!(rel_err(&got, &want) < 1e-12, "{lik:?}");
            let jm = j.jacobian().unwrap();
            let gram = GramOperator::new(j.clone());
            let got = to_vec_f64(gram.try_apply(v.clone()).unwrap());
            let want = to_vec_f64(jm.clone().transpose().matmul(jm.matmul(v)));
            assert!(rel_err(&got, &want) < 1e-12);
        }
    }

    #[test]
    fn finite_difference_fisher_converges_to_ggn() {
        let cases = [
            (
                vec![2, 7, 5, 1],
                Head::Plain,
                Likelihood::Gaussian { noise_var: 0.5 },
            ),
            (
                vec![2, 7, 2],
                Head::Heteroscedastic { min_scale: 1e-5 },
                Likelihood::HeteroscedasticGaussian,
            ),
            (vec![3, 6, 4], Head::Plain, Likelihood::Categorical),
        ];
        // a convolutional network too: the FD Fisher on the layers path
        let cnn = crate::CnnConfig {
            input: [1, 7, 7],
            channels: [2, 2],
            kernel: 2,
            outputs: 3,
            activation: Activation::Tanh,
        };
        let dev = Default::default();
        let net = cnn
            .network_config()
            .unwrap()
            .init::<TestBackend>(5, &dev)
            .unwrap();
        let x = tensor_from_f64(SplitMix64::new(6).normal_vec(4 * 49), 4, 49, &dev);
        let cnn_jac = Jacobian::new(net, x, Default::default()).unwrap();
        assert_eq!(cnn_jac.execution(), crate::Execution::Layers);
        let jacs = cases
            .into_iter()
            .map(|(widths, head, lik)| (jac(&widths, head, 10), lik))
            .chain([(cnn_jac, Likelihood::Categorical)]);
        for (j, lik) in jacs {
            let p = j.n_params();
            let v = unit_block(p, 2, 9);
            let exact = to_vec_f64(
                GgnOperator::new(j.clone(), lik)
                    .unwrap()
                    .try_apply(v.clone())
                    .unwrap(),
            );
            let mut errs = Vec::new();
            for eps in [1e-2, 1e-3, 1e-4] {
                let fd = FiniteDifferenceFisher::new(j.clone(), lik)
                    .unwrap()
                    .with_eps(eps)
                    .unwrap();
                errs.push(rel_err(
                    &to_vec_f64(fd.try_apply(v.clone()).unwrap()),
                    &exact,
                ));
            }
            // first-order scheme: error shrinks about tenfold per decade of eps
            assert!(
                errs[2] < 1e-3 && errs[1] < errs[0] * 0.3 && errs[2] < errs[1] * 0.3,
                "{lik:?}: {errs:?}"
            );
            let central = FiniteDifferenceFisher::new(j.clone(), lik)
                .unwrap()
                .with_eps(1e-3)
                .unwrap()
                .with_scheme(FdScheme::Central);
            let e = rel_err(&to_vec_f64(central.try_apply(v).unwrap()), &exact);
            assert!(e < 1e-5, "{lik:?} central: {e}");
        }
    }

    #[test]
    fn likelihood_checks() {
        let j = jac(&[2, 3, 1], Head::Plain, 4);
        assert!(GgnOperator::new(j.clone(), Likelihood::Gaussian { noise_var: 0.0 }).is_err());
        assert!(GgnOperator::new(j.clone(), Likelihood::HeteroscedasticGaussian).is_err());
        assert!(
            FiniteDifferenceFisher::new(j, Likelihood::Categorical)
                .unwrap()
                .with_eps(-1.0)
                .is_err()
        );
    }
}
