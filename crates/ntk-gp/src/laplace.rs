//! Classification with a linearized softmax network: the Laplace / generalized Gauss–Newton
//! posterior (the paper leaves classification as future work).
//!
//! Logits of $n$ points and $C$ classes are stacked point-major into $f \in \mathbb R^{nC}$
//! (entry $iC + c$). The linearized network gives the prior $f \sim \mathcal N(\mu, K)$ with
//! $K = s^2 JJ^\top$ ($nC\times nC$, cross-class terms included) and the likelihood is
//! categorical, $p(y_i \mid f_i) = \operatorname{softmax}(f_i)_{y_i}$. Its negative Hessian in
//! the logits is block diagonal, $W_i = \operatorname{diag}(\pi_i) - \pi_i\pi_i^\top$, which is
//! also the output Hessian $H$ of the Fisher / GGN $J^\top H J$.
//!
//! Newton's method finds the mode $\hat f$ (Rasmussen & Williams 2006, Alg. 3.1 and 3.3,
//! generalized to a full $K$): with $b = W(f-\mu) + \nabla\log p(y\mid f)$ and
//! $B = I + W^{1/2} K W^{1/2}$, $a = b - W^{1/2}B^{-1}W^{1/2}Kb$ and $f \leftarrow \mu + Ka$,
//! the step halved while the objective $\Psi$ would fall.
//! At the mode the Laplace posterior predictive of the logits at test points is
//! $\mathcal N\big(\mu_* + K_*^\top \nabla\log p(y\mid\hat f),\; K_{**} - K_*^\top W^{1/2}B^{-1}W^{1/2}K_*\big)$,
//! and class probabilities come from the probit approximation
//! $\operatorname{softmax}\big(m_c / \sqrt{1 + \tfrac\pi8\Sigma_{cc}}\big)$ or Monte Carlo.

use burn::prelude::Backend;
use nalgebra::{Cholesky, DMatrix, DVector, Dyn, SymmetricEigen};
use ntk_ops::{Jacobian, JacobianOperator, JacobianParams, Network, convert};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{GpError, check_finite};
use crate::ntk::MatrixFreeParams;
use crate::strategy::Strategy;

/// How the Newton iteration is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaplaceParams {
    /// Maximum Newton steps.
    pub max_iters: usize,
    /// Stop when the objective $\Psi$ changes by less than this.
    pub tolerance: f64,
}

impl Default for LaplaceParams {
    fn default() -> Self {
        Self {
            max_iters: 100,
            tolerance: 1e-10,
        }
    }
}

/// A Laplace approximation of a softmax classifier's latent posterior.
#[derive(Debug, Clone)]
pub struct LaplaceClassifier {
    classes: usize,
    grad: DVector<f64>,
    w_sqrt: DMatrix<f64>,
    b_chol: Cholesky<f64, Dyn>,
    /// Approximate log marginal likelihood $\log q(y)$.
    pub log_marginal_likelihood: f64,
    /// Newton steps taken.
    pub iterations: usize,
    /// Whether $\Psi$ settled within the tolerance; `false` when the step limit ended the
    /// iteration first.
    pub converged: bool,
}

/// Numerically stable softmax of one row of logits.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

impl LaplaceClassifier {
    /// Finds the mode for labels `labels` (each in `0..classes`), the prior kernel `kernel`
    /// ($nC\times nC$, already scaled by $s^2$) and prior mean `prior_mean` ($nC$).
    pub fn fit(
        kernel: &DMatrix<f64>,
        prior_mean: &DVector<f64>,
        labels: &[usize],
        classes: usize,
        params: LaplaceParams,
    ) -> Result<Self, GpError> {
        let n = labels.len();
        if n == 0 {
            return Err(GpError::EmptyTask);
        }
        let nc = n * classes;
        if kernel.nrows() != nc || kernel.ncols() != nc || prior_mean.len() != nc {
            return Err(GpError::Shape {
                what: "kernel / prior mean size vs points × classes",
                expected: nc,
                got: if prior_mean.len() != nc {
                    prior_mean.len()
                } else {
                    kernel.nrows()
                },
            });
        }
        if let Some(i) = labels.iter().position(|&l| l >= classes) {
            return Err(GpError::Shape {
                what: "a class label (must be below the number of classes)",
                expected: classes,
                got: labels[i],
            });
        }
        check_finite("kernel matrix", kernel.iter())?;
        check_finite("prior mean", prior_mean.iter())?;
        let mut f = prior_mean.clone();
        let mut a = DVector::zeros(nc);
        let mut psi_old = f64::NEG_INFINITY;
        let mut iterations = 0;
        // Set when no step along the Newton direction raises Ψ (it stops there, unconverged).
        let mut stalled = false;
        loop {
            let (log_lik, grad, w) = likelihood_terms(&f, labels, classes);
            let psi = log_lik - 0.5 * a.dot(&(&f - prior_mean));
            if !psi.is_finite() {
                return Err(GpError::NonFiniteObjective {
                    at: format!("Newton step {iterations} towards the Laplace mode"),
                    value: psi,
                });
            }
            let w_sqrt = block_sqrt(&w, n, classes);
            let b_mat = DMatrix::identity(nc, nc) + &w_sqrt * kernel * &w_sqrt;
            let b_chol = Cholesky::new(b_mat).ok_or(GpError::NotPositiveDefinite {
                what: "I + W½KW½",
            })?;
            let converged = !stalled && (psi - psi_old).abs() < params.tolerance;
            if iterations >= params.max_iters || converged || stalled {
                let log_det_b = 2.0
                    * b_chol
                        .l_dirty()
                        .diagonal()
                        .iter()
                        .map(|d| d.ln())
                        .sum::<f64>();
                return Ok(Self {
                    classes,
                    grad,
                    w_sqrt,
                    b_chol,
                    log_marginal_likelihood: psi - 0.5 * log_det_b,
                    iterations,
                    converged,
                });
            }
            psi_old = psi;
            let b = &w * (&f - prior_mean) + &grad;
            let kb = kernel * &b;
            let a_newton = &b - &w_sqrt * b_chol.solve(&(&w_sqrt * kb));
            // The full Newton step, halved while Ψ would fall: on a task the network gets
            // confidently wrong (W ≈ 0 at those points) a full first step overshoots and
            // plain Newton cycles. Ψ is concave in a, so a short enough step rises.
            let mut t = 1.0;
            loop {
                let a_t = if t == 1.0 {
                    a_newton.clone()
                } else {
                    &a + (&a_newton - &a) * t
                };
                let f_t = prior_mean + kernel * &a_t;
                let psi_t =
                    likelihood_terms(&f_t, labels, classes).0 - 0.5 * a_t.dot(&(&f_t - prior_mean));
                if psi_t >= psi - 1e-12 * psi.abs() {
                    (a, f) = (a_t, f_t);
                    break;
                }
                t *= 0.5;
                if t < 1e-6 {
                    stalled = true;
                    break;
                }
            }
            iterations += 1;
        }
    }

    /// Predictive logits at $m$ test points: means ($m\times C$) and per-point covariances
    /// ($C\times C$), from the cross-kernel `cross` ($nC \times mC$), the test kernel's
    /// diagonal blocks `test_blocks` (one $C\times C$ matrix per point) and the prior mean.
    pub fn predict_logits(
        &self,
        cross: &DMatrix<f64>,
        test_blocks: &[DMatrix<f64>],
        test_mean: &DVector<f64>,
    ) -> Result<(DMatrix<f64>, Vec<DMatrix<f64>>), GpError> {
        let c = self.classes;
        let m = test_blocks.len();
        if cross.nrows() != self.grad.len() || cross.ncols() != m * c || test_mean.len() != m * c {
            return Err(GpError::Shape {
                what: "cross-kernel / test mean vs training and test sizes",
                expected: m * c,
                got: cross.ncols(),
            });
        }
        let mean = test_mean + cross.tr_mul(&self.grad);
        let mut v = &self.w_sqrt * cross;
        self.b_chol.l_dirty().solve_lower_triangular_mut(&mut v);
        let mut covs = Vec::with_capacity(m);
        for (j, block) in test_blocks.iter().enumerate() {
            let vj = v.columns(j * c, c);
            covs.push(block - vj.transpose() * vj);
        }
        Ok((DMatrix::from_row_slice(m, c, mean.as_slice()), covs))
    }
}

/// Class probabilities by the probit approximation $\operatorname{softmax}(m_c/\sqrt{1+\pi\Sigma_{cc}/8})$.
pub fn probit_probabilities(means: &DMatrix<f64>, covs: &[DMatrix<f64>]) -> DMatrix<f64> {
    let (m, c) = means.shape();
    let mut out = DMatrix::zeros(m, c);
    for i in 0..m {
        let scaled: Vec<f64> = (0..c)
            .map(|k| {
                means[(i, k)] / (1.0 + std::f64::consts::PI / 8.0 * covs[i][(k, k)].max(0.0)).sqrt()
            })
            .collect();
        for (k, p) in softmax(&scaled).into_iter().enumerate() {
            out[(i, k)] = p;
        }
    }
    out
}

/// Class probabilities by Monte Carlo: the mean softmax of `samples` seeded draws of the logits.
pub fn monte_carlo_probabilities(
    means: &DMatrix<f64>,
    covs: &[DMatrix<f64>],
    samples: usize,
    seed: u64,
) -> DMatrix<f64> {
    let (m, c) = means.shape();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = DMatrix::zeros(m, c);
    for i in 0..m {
        // A square root of the covariance by eigen-decomposition (PSD up to round-off).
        let eig = SymmetricEigen::new(covs[i].clone());
        let sqrt =
            &eig.eigenvectors * DMatrix::from_diagonal(&eig.eigenvalues.map(|l| l.max(0.0).sqrt()));
        for _ in 0..samples {
            let z = DVector::from_fn(c, |_, _| StandardNormal.sample(&mut rng));
            let logits = means.row(i).transpose() + &sqrt * z;
            for (k, p) in softmax(logits.as_slice()).into_iter().enumerate() {
                out[(i, k)] += p / samples as f64;
            }
        }
    }
    out
}

/// $\log p(y\mid f)$, its gradient and the block-diagonal negative Hessian $W$.
fn likelihood_terms(
    f: &DVector<f64>,
    labels: &[usize],
    c: usize,
) -> (f64, DVector<f64>, DMatrix<f64>) {
    let (log_lik, grad, blocks) = likelihood_blocks(f, labels, c);
    let n = labels.len();
    let mut w = DMatrix::zeros(n * c, n * c);
    for (i, b) in blocks.iter().enumerate() {
        w.view_mut((i * c, i * c), (c, c)).copy_from(b);
    }
    (log_lik, grad, w)
}

/// $\log p(y\mid f)$, its gradient, and $W$ as its $C\times C$ diagonal blocks
/// $W_i = \operatorname{diag}\pi_i - \pi_i\pi_i^\top$.
pub(crate) fn likelihood_blocks(
    f: &DVector<f64>,
    labels: &[usize],
    c: usize,
) -> (f64, DVector<f64>, Vec<DMatrix<f64>>) {
    let n = labels.len();
    let mut log_lik = 0.0;
    let mut grad = DVector::zeros(n * c);
    let mut blocks = Vec::with_capacity(n);
    for (i, &y) in labels.iter().enumerate() {
        let logits = &f.as_slice()[i * c..(i + 1) * c];
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        log_lik += logits[y] - lse;
        let pi = softmax(logits);
        for a in 0..c {
            grad[i * c + a] = if a == y { 1.0 } else { 0.0 } - pi[a];
        }
        blocks.push(DMatrix::from_fn(c, c, |a, b| {
            (if a == b { pi[a] } else { 0.0 }) - pi[a] * pi[b]
        }));
    }
    (log_lik, grad, blocks)
}

/// The symmetric square root of the block-diagonal PSD matrix $W$, block by block.
fn block_sqrt(w: &DMatrix<f64>, n: usize, c: usize) -> DMatrix<f64> {
    let mut out = DMatrix::zeros(n * c, n * c);
    for i in 0..n {
        let block = w.view((i * c, i * c), (c, c)).into_owned();
        let eig = SymmetricEigen::new(block);
        let root = &eig.eigenvectors
            * DMatrix::from_diagonal(&eig.eigenvalues.map(|l| l.max(0.0).sqrt()))
            * eig.eigenvectors.transpose();
        out.view_mut((i * c, i * c), (c, c)).copy_from(&root);
    }
    out
}

/// How a [`NtkClassifier`] is built: defaults and builder methods, checked by
/// [`check`](Self::check) and fitted on a network, inputs and labels by [`fit`](Self::fit).
///
/// Strategies: [`Strategy::Dense`] (the function-space Newton iteration on the $nC\times nC$
/// kernel), [`Strategy::MatrixFreeParameterSpace`] (Newton in weight space with CG on the
/// GGN, see [`laplace_free`](crate::laplace_free)), and [`Strategy::Auto`]: dense up to
/// $nC = 2000$ logits, matrix-free above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassifierParams {
    /// The strategy.
    pub strategy: Strategy,
    /// The prior scale $s^2$ (fixed).
    pub prior_scale: f64,
    /// The Newton iteration.
    pub laplace: LaplaceParams,
    /// CG and SLQ of the matrix-free strategy (`cg_tolerance`, `max_iters`, `probes`, `seed`,
    /// `exact_trace`).
    pub matrix_free: MatrixFreeParams,
    /// Memory and caching of the Jacobian products.
    pub jacobian: JacobianParams,
}

impl Default for ClassifierParams {
    /// Prior scale 1, strategy by size.
    fn default() -> Self {
        Self {
            strategy: Strategy::Auto,
            prior_scale: 1.0,
            laplace: LaplaceParams::default(),
            matrix_free: MatrixFreeParams {
                cg_tolerance: 1e-10,
                ..MatrixFreeParams::default()
            },
            jacobian: JacobianParams::default(),
        }
    }
}

/// Logits up to which [`Strategy::Auto`] classifies densely.
pub const DENSE_CLASSIFIER_MAX_LOGITS: usize = 2000;

impl ClassifierParams {
    /// The strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The prior scale $s^2$.
    pub fn prior_scale(mut self, prior_scale: f64) -> Self {
        self.prior_scale = prior_scale;
        self
    }

    /// The Newton iteration.
    pub fn laplace(mut self, laplace: LaplaceParams) -> Self {
        self.laplace = laplace;
        self
    }

    /// CG and SLQ of the matrix-free strategy.
    pub fn matrix_free(mut self, matrix_free: MatrixFreeParams) -> Self {
        self.matrix_free = matrix_free;
        self
    }

    /// Memory and caching of the Jacobian products.
    pub fn jacobian(mut self, jacobian: JacobianParams) -> Self {
        self.jacobian = jacobian;
        self
    }

    /// The strategy that runs for `n` points of `classes` logits each: [`Strategy::Auto`]
    /// resolved (dense up to [`DENSE_CLASSIFIER_MAX_LOGITS`] logits, matrix-free above).
    pub fn resolved_strategy(&self, n: usize, classes: usize) -> Strategy {
        match self.strategy {
            Strategy::Auto if n * classes <= DENSE_CLASSIFIER_MAX_LOGITS => Strategy::Dense,
            Strategy::Auto => Strategy::MatrixFreeParameterSpace,
            s => s,
        }
    }

    /// Checks the ranges: a positive prior scale and Newton tolerance, at least one Newton
    /// step, a strategy the classifier has, the matrix-free parameters.
    pub fn check(&self) -> Result<(), GpError> {
        crate::error::check_positive("prior scale s²", self.prior_scale)?;
        if !(self.laplace.tolerance.is_finite() && self.laplace.tolerance > 0.0) {
            return Err(GpError::InvalidParam {
                name: "laplace.tolerance",
                reason: format!("{} must be positive and finite", self.laplace.tolerance),
            });
        }
        if self.laplace.max_iters == 0 {
            return Err(GpError::InvalidParam {
                name: "laplace.max_iters",
                reason: "must be at least 1".into(),
            });
        }
        if matches!(
            self.strategy,
            Strategy::ParameterSpace | Strategy::MatrixFree
        ) {
            return Err(GpError::NotSupported {
                strategy: self.strategy,
                what: "classification",
                instead: "use Dense, MatrixFreeParameterSpace or Auto",
            });
        }
        self.matrix_free.check()
    }

    /// Checks the parameters and conditions `network` on inputs `x` and labels.
    pub fn fit<B: Backend>(
        &self,
        network: impl Into<Network<B>>,
        x: &DMatrix<f64>,
        labels: &[usize],
    ) -> Result<NtkClassifier<B>, GpError>
    where
        B::FloatElem: krylov::Scalar,
    {
        NtkClassifier::new(network, x, labels, *self)
    }
}

/// The Laplace posterior of either strategy.
#[derive(Debug, Clone)]
enum ClassPosterior {
    Dense(LaplaceClassifier),
    Free(crate::laplace_free::FreeLaplace),
}

/// A softmax network adapted to a new classification task through its linearization:
/// prior logits $\mathcal N(f(X;\theta), s^2 JJ^\top)$ from the network and its NTK, then the
/// Laplace posterior, densely ([`LaplaceClassifier`]) or matrix-free in weight space.
///
/// It reports the Laplace approximation to the log marginal likelihood, the posterior mean
/// and covariance of each test point's logits, and class probabilities by the probit
/// approximation $\operatorname{softmax}_c\big(m_c/\sqrt{1 + \tfrac\pi8\Sigma_{cc}}\big)$ (or
/// Monte Carlo, [`predict_proba_mc`](Self::predict_proba_mc)).
#[derive(Debug, Clone)]
pub struct NtkClassifier<B: Backend> {
    jac: Jacobian<B>,
    params: ClassifierParams,
    strategy: Strategy,
    posterior: ClassPosterior,
}

impl<B: Backend> NtkClassifier<B>
where
    B::FloatElem: krylov::Scalar,
{
    /// Conditions `network` (any [`Network`] or `Mlp` with one logit per class) on inputs
    /// `x` and labels in `0..classes` ([`ClassifierParams::fit`] is the same call).
    pub fn new(
        network: impl Into<Network<B>>,
        x: &DMatrix<f64>,
        labels: &[usize],
        params: ClassifierParams,
    ) -> Result<Self, GpError> {
        params.check()?;
        if x.nrows() != labels.len() {
            return Err(GpError::Shape {
                what: "input rows vs labels",
                expected: labels.len(),
                got: x.nrows(),
            });
        }
        if labels.is_empty() {
            return Err(GpError::EmptyTask);
        }
        let network = network.into();
        let classes = network.n_outputs();
        if let Some(i) = labels.iter().position(|&l| l >= classes) {
            return Err(GpError::Shape {
                what: "a class label (must be below the number of classes)",
                expected: classes,
                got: labels[i],
            });
        }
        let device = network.device();
        let jac = Jacobian::new(
            network,
            convert::from_dmatrix_f64(x, &device),
            params.jacobian,
        )?;
        let mean = DVector::from_vec(convert::to_vec_f64(jac.outputs()?));
        let strategy = params.resolved_strategy(labels.len(), classes);
        let posterior = if strategy == Strategy::Dense {
            let k = convert::to_dmatrix_f64(jac.ntk_matrix(&jac)?) * params.prior_scale;
            ClassPosterior::Dense(LaplaceClassifier::fit(
                &k,
                &mean,
                labels,
                classes,
                params.laplace,
            )?)
        } else {
            ClassPosterior::Free(crate::laplace_free::FreeLaplace::fit(
                &jac,
                &mean,
                labels,
                params.prior_scale,
                params.laplace,
                &params.matrix_free,
            )?)
        };
        Ok(Self {
            jac,
            params,
            strategy,
            posterior,
        })
    }

    /// The strategy used (`Auto` resolved).
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The dense Laplace posterior, when the dense strategy ran.
    pub fn laplace(&self) -> Option<&LaplaceClassifier> {
        match &self.posterior {
            ClassPosterior::Dense(l) => Some(l),
            ClassPosterior::Free(_) => None,
        }
    }

    /// The Laplace approximation $\log q(y) = \Psi(\hat f) - \tfrac12\log\lvert I +
    /// W^{1/2}KW^{1/2}\rvert$ (the matrix-free strategy estimates the log-determinant by SLQ).
    pub fn log_marginal_likelihood(&self) -> f64 {
        match &self.posterior {
            ClassPosterior::Dense(l) => l.log_marginal_likelihood,
            ClassPosterior::Free(f) => f.log_marginal_likelihood,
        }
    }

    /// The standard error of the log marginal likelihood: the SLQ estimate's for the
    /// matrix-free strategy (0 with exact traces), 0 for the dense one.
    pub fn lml_std_error(&self) -> f64 {
        match &self.posterior {
            ClassPosterior::Dense(_) => 0.0,
            ClassPosterior::Free(f) => 0.5 * f.logdet_std_error,
        }
    }

    /// Newton steps taken, and whether $\Psi$ settled within the tolerance.
    pub fn newton(&self) -> (usize, bool) {
        match &self.posterior {
            ClassPosterior::Dense(l) => (l.iterations, l.converged),
            ClassPosterior::Free(f) => (f.iterations, f.converged),
        }
    }

    /// Predictive logits at the rows of `x_test`: means ($m\times C$) and covariances.
    pub fn predict_logits(
        &self,
        x_test: &DMatrix<f64>,
    ) -> Result<(DMatrix<f64>, Vec<DMatrix<f64>>), GpError> {
        let device = self.jac.device();
        let jt = Jacobian::new(
            self.jac.network().clone(),
            convert::from_dmatrix_f64(x_test, &device),
            self.params.jacobian,
        )?;
        let mean = DVector::from_vec(convert::to_vec_f64(jt.outputs()?));
        match &self.posterior {
            ClassPosterior::Dense(lap) => {
                let c = self.jac.n_outputs();
                let s2 = self.params.prior_scale;
                let cross = convert::to_dmatrix_f64(self.jac.ntk_matrix(&jt)?) * s2;
                let test = convert::to_dmatrix_f64(jt.ntk_matrix(&jt)?) * s2;
                let blocks = (0..x_test.nrows())
                    .map(|i| test.view((i * c, i * c), (c, c)).into_owned())
                    .collect::<Vec<_>>();
                lap.predict_logits(&cross, &blocks, &mean)
            }
            ClassPosterior::Free(f) => f.predict_logits(
                &self.jac,
                &jt,
                &mean,
                self.params.prior_scale,
                &self.params.matrix_free,
            ),
        }
    }

    /// Class probabilities by the probit approximation.
    pub fn predict_proba(&self, x_test: &DMatrix<f64>) -> Result<DMatrix<f64>, GpError> {
        let (means, covs) = self.predict_logits(x_test)?;
        Ok(probit_probabilities(&means, &covs))
    }

    /// Class probabilities by Monte Carlo over the logits' posterior (`samples` seeded draws).
    pub fn predict_proba_mc(
        &self,
        x_test: &DMatrix<f64>,
        samples: usize,
        seed: u64,
    ) -> Result<DMatrix<f64>, GpError> {
        let (means, covs) = self.predict_logits(x_test)?;
        Ok(monte_carlo_probabilities(&means, &covs, samples, seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear-in-parameters softmax model with explicit Jacobian J (nC × p).
    fn problem() -> (DMatrix<f64>, DMatrix<f64>, Vec<usize>, usize, f64) {
        let (n, m, c, p) = (12, 3, 3, 5);
        let j_all = DMatrix::from_fn((n + m) * c, p, |r, k| {
            ((r * 5 + k * 11) as f64 * 0.37).sin()
        });
        let labels: Vec<usize> = (0..n).map(|i| (i * 7 + 1) % c).collect();
        let jt = j_all.rows(0, n * c).into_owned();
        let js = j_all.rows(n * c, m * c).into_owned();
        (jt, js, labels, c, 2.0)
    }

    /// The posterior logits at the points of `js` (zero prior mean there), from the kernels
    /// of the linear model.
    fn predict_at_test_points(
        lap: &LaplaceClassifier,
        jt: &DMatrix<f64>,
        js: &DMatrix<f64>,
        s2: f64,
        c: usize,
    ) -> (DMatrix<f64>, Vec<DMatrix<f64>>) {
        let m = js.nrows() / c;
        let cross = jt * js.transpose() * s2;
        let kss = js * js.transpose() * s2;
        let blocks: Vec<DMatrix<f64>> = (0..m)
            .map(|i| kss.view((i * c, i * c), (c, c)).into_owned())
            .collect();
        lap.predict_logits(&cross, &blocks, &DVector::zeros(m * c))
            .unwrap()
    }

    #[test]
    fn matches_parameter_space_newton() {
        let (jt, js, labels, c, s2) = problem();
        let n = labels.len();
        let p = jt.ncols();
        let k = &jt * jt.transpose() * s2;
        let mu = DVector::zeros(n * c);
        let lap = LaplaceClassifier::fit(&k, &mu, &labels, c, LaplaceParams::default()).unwrap();
        // Parameter space: maximize log p(y | Jθ) − ‖θ‖²/(2s²) by Newton with the GGN (exact here).
        let mut theta = DVector::zeros(p);
        for _ in 0..100 {
            let (_, g, w) = likelihood_terms(&(&jt * &theta), &labels, c);
            let hess = jt.transpose() * &w * &jt + DMatrix::identity(p, p) / s2;
            let step = hess
                .cholesky()
                .unwrap()
                .solve(&(jt.transpose() * g - &theta / s2));
            theta += step;
        }
        let (_, _, w) = likelihood_terms(&(&jt * &theta), &labels, c);
        let sigma = (jt.transpose() * &w * &jt + DMatrix::identity(p, p) / s2)
            .try_inverse()
            .unwrap();
        let mean_ref = &js * &theta;
        let cov_ref = &js * sigma * js.transpose();
        let m = js.nrows() / c;
        let (means, covs) = predict_at_test_points(&lap, &jt, &js, s2, c);
        for i in 0..m {
            for a in 0..c {
                assert!((means[(i, a)] - mean_ref[i * c + a]).abs() < 1e-8);
                for b in 0..c {
                    assert!((covs[i][(a, b)] - cov_ref[(i * c + a, i * c + b)]).abs() < 1e-8);
                }
            }
        }
        // Probabilities: rows sum to one, and Monte Carlo agrees with the probit approximation
        // to within the approximation's error.
        let probit = probit_probabilities(&means, &covs);
        let mc = monte_carlo_probabilities(&means, &covs, 4000, 3);
        for i in 0..m {
            assert!((probit.row(i).sum() - 1.0).abs() < 1e-12);
            assert!((mc.row(i).sum() - 1.0).abs() < 1e-12);
            for a in 0..c {
                assert!((probit[(i, a)] - mc[(i, a)]).abs() < 0.05, "{probit} {mc}");
            }
        }
        assert!(lap.log_marginal_likelihood.is_finite() && lap.log_marginal_likelihood < 0.0);
    }

    #[test]
    fn the_newton_iteration_says_whether_it_converged() {
        let (jt, _, labels, c, s2) = problem();
        let k = &jt * jt.transpose() * s2;
        let mu = DVector::zeros(labels.len() * c);
        let lap = LaplaceClassifier::fit(&k, &mu, &labels, c, LaplaceParams::default()).unwrap();
        assert!(lap.converged && lap.iterations < 100);
        let one = LaplaceParams {
            max_iters: 1,
            ..Default::default()
        };
        let lap = LaplaceClassifier::fit(&k, &mu, &labels, c, one).unwrap();
        assert!(!lap.converged && lap.iterations == 1);
        // Logits of ±1e308 against the labels: the log-likelihood overflows to -inf, a typed
        // error rather than a result.
        let mu1 = DVector::from_fn(labels.len() * c, |r, _| {
            if labels[r / c] == r % c {
                -1e308
            } else {
                1e308
            }
        });
        let e = LaplaceClassifier::fit(&k, &mu1, &labels, c, LaplaceParams::default());
        assert!(
            matches!(e, Err(GpError::NonFiniteObjective { .. })),
            "{e:?}"
        );
    }

    /// A prior that is confidently wrong about every label (logit 12 on another class) with a
    /// wide prior: W ≈ 0 where the network is wrong, so a full first Newton step overshoots.
    /// The halved steps reach the mode that a damped weight-space Newton finds.
    #[test]
    fn a_confidently_wrong_prior_still_reaches_the_mode() {
        let (jt, js, labels, c, _) = problem();
        let s2 = 50.0;
        let (n, p) = (labels.len(), jt.ncols());
        let mu = DVector::from_fn(n * c, |r, _| {
            if (labels[r / c] + 1) % c == r % c {
                12.0
            } else {
                0.0
            }
        });
        let k = &jt * jt.transpose() * s2;
        let lap = LaplaceClassifier::fit(&k, &mu, &labels, c, LaplaceParams::default()).unwrap();
        assert!(lap.converged, "{} steps", lap.iterations);
        // Weight space: maximize log p(y | μ + Jθ) − ‖θ‖²/(2s²), steps halved while it falls.
        let objective = |theta: &DVector<f64>| {
            likelihood_terms(&(&mu + &jt * theta), &labels, c).0 - theta.norm_squared() / (2.0 * s2)
        };
        let mut theta = DVector::zeros(p);
        for _ in 0..200 {
            let (_, g, w) = likelihood_terms(&(&mu + &jt * &theta), &labels, c);
            let hess = jt.transpose() * &w * &jt + DMatrix::identity(p, p) / s2;
            let step = hess
                .cholesky()
                .unwrap()
                .solve(&(jt.transpose() * g - &theta / s2));
            let mut t = 1.0;
            while objective(&(&theta + &step * t)) < objective(&theta) && t > 1e-9 {
                t *= 0.5;
            }
            theta += step * t;
        }
        let m = js.nrows() / c;
        let (means, _) = predict_at_test_points(&lap, &jt, &js, s2, c);
        let mean_ref = &js * &theta;
        for i in 0..m {
            for a in 0..c {
                let (g, w) = (means[(i, a)], mean_ref[i * c + a]);
                assert!((g - w).abs() < 1e-7 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn rejects_bad_labels_and_shapes() {
        let k = DMatrix::identity(4, 4);
        let mu = DVector::zeros(4);
        assert!(matches!(
            LaplaceClassifier::fit(&k, &mu, &[0, 2], 2, LaplaceParams::default()),
            Err(GpError::Shape { .. })
        ));
        assert!(matches!(
            LaplaceClassifier::fit(&k, &mu, &[0, 1, 1], 2, LaplaceParams::default()),
            Err(GpError::Shape { .. })
        ));
    }

    #[test]
    fn a_softmax_network_adapts_to_new_labels() {
        use ntk_ops::{DefaultBackend, MlpConfig};
        // Three classes by angle in the plane; the network is untrained.
        let n = 30;
        let x = DMatrix::from_fn(n, 2, |i, j| {
            let t = i as f64 * 0.7;
            if j == 0 {
                t.cos() * (1.0 + 0.1 * (i % 3) as f64)
            } else {
                t.sin()
            }
        });
        let labels: Vec<usize> = (0..n)
            .map(|i| (((x[(i, 1)].atan2(x[(i, 0)]) + 3.2) / 2.14) as usize).min(2))
            .collect();
        let net = MlpConfig::new(&[2, 16, 3])
            .init::<DefaultBackend>(2, &Default::default())
            .unwrap();
        let params = ClassifierParams::default().prior_scale(10.0);
        let clf = params.fit(net.clone(), &x, &labels).unwrap();
        assert_eq!(clf.strategy(), Strategy::Dense);
        let proba = clf.predict_proba(&x).unwrap();
        // The matrix-free strategy (exact traces): the same posterior.
        let free = params
            .strategy(Strategy::MatrixFreeParameterSpace)
            .matrix_free(MatrixFreeParams {
                exact_trace: true,
                ..params.matrix_free
            })
            .fit(net, &x, &labels)
            .unwrap();
        let (dl, fl) = (
            clf.log_marginal_likelihood(),
            free.log_marginal_likelihood(),
        );
        assert!((dl - fl).abs() < 1e-7 * dl.abs(), "lml {dl} vs {fl}");
        assert!((free.predict_proba(&x).unwrap() - &proba).amax() < 1e-7);
        let correct = (0..n)
            .filter(|&i| {
                (0..3).max_by(|&a, &b| proba[(i, a)].total_cmp(&proba[(i, b)])) == Some(labels[i])
            })
            .count();
        assert!(
            correct >= 27,
            "{correct}/30 training points classified right"
        );
        for i in 0..n {
            assert!((proba.row(i).sum() - 1.0).abs() < 1e-12);
        }
    }

    /// The matrix-free classifier on a small CNN against a float64 weight-space Newton
    /// reference built from the explicit (autodiff) Jacobian: mode, log marginal likelihood,
    /// predictive logit means and covariances.
    #[test]
    fn matrix_free_matches_weight_space_newton_on_a_cnn() {
        use ntk_ops::{Activation, DefaultBackend, Layer, NetworkConfig, layers};
        type B = DefaultBackend;
        let net = NetworkConfig::new(
            &[1, 4, 4],
            vec![
                layers::Conv2d::new(1, 2, 3).with_padding([1, 1]).into(),
                Layer::act(Activation::Tanh),
                Layer::avg_pool2d([2, 2]),
                Layer::flatten(),
                Layer::linear(8, 3),
            ],
        )
        .init::<B>(7, &Default::default())
        .unwrap();
        let (n, m, c) = (20, 4, 3);
        let x = DMatrix::from_fn(n + m, 16, |i, j| ((i * 16 + j) as f64 * 0.43).sin());
        let labels: Vec<usize> = (0..n).map(|i| (i * 5 + 2) % c).collect();
        let (xt, xs) = (x.rows(0, n).into_owned(), x.rows(n, m).into_owned());
        let s2 = 3.0;
        let dev = Default::default();
        let explicit = |x: &DMatrix<f64>| {
            let p = net.n_params();
            let j = net
                .generic_jacobian(
                    convert::from_dmatrix_f64(x, &dev),
                    JacobianParams::default(),
                )
                .unwrap();
            let eye = convert::from_dmatrix_f64(&DMatrix::identity(p, p), &dev);
            convert::to_dmatrix_f64(j.jvp(eye).unwrap())
        };
        let forward = |x: &DMatrix<f64>| {
            DVector::from_vec(convert::to_vec_f64(
                net.forward(convert::from_dmatrix_f64(x, &dev)),
            ))
        };
        let (j, js, mu, mus) = (explicit(&xt), explicit(&xs), forward(&xt), forward(&xs));
        let p = j.ncols();
        // Newton in weight space, dense, f64.
        let mut theta = DVector::zeros(p);
        for _ in 0..60 {
            let (_, g, w) = likelihood_terms(&(&mu + &j * &theta), &labels, c);
            let hess = j.transpose() * &w * &j + DMatrix::identity(p, p) / s2;
            theta += hess
                .cholesky()
                .unwrap()
                .solve(&(j.transpose() * g - &theta / s2));
        }
        let (log_lik, _, w) = likelihood_terms(&(&mu + &j * &theta), &labels, c);
        let a = DMatrix::identity(p, p) + (j.transpose() * &w * &j) * s2;
        let lml_ref = log_lik
            - 0.5 * theta.norm_squared() / s2
            - a.clone()
                .cholesky()
                .unwrap()
                .l()
                .diagonal()
                .map(f64::ln)
                .sum();
        let sigma = (j.transpose() * &w * &j + DMatrix::identity(p, p) / s2)
            .try_inverse()
            .unwrap();
        let mean_ref = &mus + &js * &theta;
        let cov_ref = &js * sigma * js.transpose();

        let params = ClassifierParams::default()
            .prior_scale(s2)
            .strategy(Strategy::MatrixFreeParameterSpace)
            .matrix_free(MatrixFreeParams {
                exact_trace: true,
                cg_tolerance: 1e-12,
                ..MatrixFreeParams::default()
            });
        let clf = params.fit(net.clone(), &xt, &labels).unwrap();
        let (steps, converged) = clf.newton();
        assert!(converged && steps < 30, "{steps} Newton steps");
        let el = (clf.log_marginal_likelihood() - lml_ref).abs();
        let (means, covs) = clf.predict_logits(&xs).unwrap();
        let (mut em, mut ec) = (0.0f64, 0.0f64);
        for i in 0..m {
            for a in 0..c {
                em = em.max((means[(i, a)] - mean_ref[i * c + a]).abs());
                for b in 0..c {
                    ec = ec.max((covs[i][(a, b)] - cov_ref[(i * c + a, i * c + b)]).abs());
                }
            }
        }
        println!(
            "matrix-free classifier vs weight-space Newton: lml {el:.1e}, means {em:.1e}, covariances {ec:.1e}"
        );
        assert!(el < 1e-8 * lml_ref.abs(), "lml {el:e}");
        assert!(em < 1e-8 && ec < 1e-8, "means {em:e}, covariances {ec:e}");
        // The dense strategy agrees as well.
        let dense = params
            .strategy(Strategy::Dense)
            .fit(net, &xt, &labels)
            .unwrap();
        assert!((dense.log_marginal_likelihood() - lml_ref).abs() < 1e-8 * lml_ref.abs());
        // Strategies the classifier does not have are typed errors.
        assert!(matches!(
            params.strategy(Strategy::MatrixFree).check(),
            Err(GpError::NotSupported { .. })
        ));
    }
}
