//! The multi-task hierarchy (the paper's Algorithm 1): one trained network, shared by every
//! task, and per task its data, noise $\sigma_t^2$, prior scale, mean and cached solve.
//!
//! Adding a task costs only that task's work: the network is not touched and the other tasks'
//! solves stay cached. The multi-task Fisher $\bar F = \frac1T\sum_t J_t^\top J_t/\sigma_t^2$ (the
//! mean of the per-task Gauss–Newton matrices) is available as a matrix-free operator.
//! [`MultiTask::state`] serializes the weights and every task's hyper-parameters (data
//! optional) with serde; [`MultiTask::from_state`] restores identical predictions.

use std::collections::BTreeMap;

use burn::prelude::Backend;
use krylov::LinearOperator;
use nalgebra::{DMatrix, DVector};
use ntk_ops::{
    GgnOperator, Jacobian, JacobianParams, Likelihood, Network, NetworkConfig, TensorBlock, convert,
};
use serde::{Deserialize, Serialize};

use crate::error::GpError;
use crate::exact::Prediction;
use crate::fit::Param;
use crate::ntk::{MeanFunction, NtkGp, NtkGpParams};

/// One task: its data and its conditioned GP.
#[derive(Debug, Clone)]
struct TaskEntry<B: Backend> {
    x: DMatrix<f64>,
    y: DVector<f64>,
    gp: NtkGp<B>,
}

/// Tasks sharing one network.
#[derive(Debug, Clone)]
pub struct MultiTask<B: Backend> {
    network: Network<B>,
    defaults: NtkGpParams,
    tasks: BTreeMap<String, TaskEntry<B>>,
}

impl<B: Backend> MultiTask<B>
where
    B::FloatElem: krylov::Scalar,
{
    /// A hierarchy around the trained `network` (any [`Network`], or an `Mlp`); `defaults`
    /// configures tasks added without their own configuration.
    pub fn new(network: impl Into<Network<B>>, defaults: NtkGpParams) -> Self {
        Self {
            network: network.into(),
            defaults,
            tasks: BTreeMap::new(),
        }
    }

    /// The shared network.
    pub fn network(&self) -> &Network<B> {
        &self.network
    }

    /// Conditions a task on its data (fitting what its configuration leaves free) and caches
    /// the solve; replaces a task of the same name.
    pub fn add_task(
        &mut self,
        name: impl Into<String>,
        x: DMatrix<f64>,
        y: DVector<f64>,
        config: Option<NtkGpParams>,
    ) -> Result<&NtkGp<B>, GpError> {
        let gp = NtkGp::new(
            self.network.clone(),
            &x,
            &y,
            config.unwrap_or(self.defaults),
        )?;
        let name = name.into();
        self.tasks.insert(name.clone(), TaskEntry { x, y, gp });
        Ok(&self.tasks[&name].gp)
    }

    /// Removes a task; returns whether it existed.
    pub fn remove_task(&mut self, name: &str) -> bool {
        self.tasks.remove(name).is_some()
    }

    /// The task names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// A task's GP.
    pub fn task(&self, name: &str) -> Option<&NtkGp<B>> {
        self.tasks.get(name).map(|t| &t.gp)
    }

    /// Predictions for task `name` at the rows of `x_test`.
    pub fn predict(&self, name: &str, x_test: &DMatrix<f64>) -> Result<Prediction, GpError> {
        self.task(name)
            .ok_or_else(|| GpError::UnknownTask(name.to_string()))?
            .predict(x_test)
    }

    /// The multi-task Fisher $\bar F v = \frac1T\sum_t J_t^\top J_t v/\sigma_t^2$ as an operator on
    /// parameter-space blocks.
    pub fn fisher(&self) -> Result<MultiTaskFisher<B>, GpError> {
        if self.tasks.is_empty() {
            return Err(GpError::EmptyTask);
        }
        let dev = self.network.device();
        let parts = self
            .tasks
            .values()
            .map(|t| {
                let jac = Jacobian::new(
                    self.network.clone(),
                    convert::from_dmatrix_f64(&t.x, &dev),
                    JacobianParams::default(),
                )?;
                GgnOperator::new(
                    jac,
                    Likelihood::Gaussian {
                        noise_var: t.gp.hyper().noise,
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MultiTaskFisher { parts })
    }

    /// The serializable state: architecture, weights, buffers, and per task its fitted
    /// hyper-parameters (as fixed values) and, if `with_data`, its data.
    pub fn state(&self, with_data: bool) -> MultiTaskState {
        MultiTaskState {
            network: self.network.config().clone(),
            weights: self.network.params_f64(),
            buffers: self.network.buffers_flat(),
            tasks: self
                .tasks
                .iter()
                .map(|(name, t)| {
                    let h = t.gp.hyper();
                    let fixed = NtkGpParams {
                        noise: Param::Fixed(h.noise),
                        prior_scale: Param::Fixed(h.prior_scale),
                        mean: match t.gp.params().mean {
                            MeanFunction::Constant(_) => {
                                MeanFunction::Constant(Param::Fixed(t.gp.constant_mean()))
                            }
                            other => other,
                        },
                        ..*t.gp.params()
                    };
                    TaskState {
                        name: name.clone(),
                        strategy: t.gp.choice().strategy,
                        noise: fixed.noise,
                        prior_scale: fixed.prior_scale,
                        mean: fixed.mean,
                        data: with_data.then(|| TaskData {
                            inputs: t
                                .x
                                .row_iter()
                                .map(|r| r.iter().copied().collect())
                                .collect(),
                            targets: t.y.iter().copied().collect(),
                        }),
                    }
                })
                .collect(),
        }
    }

    /// Restores a hierarchy from `state` on `device`: tasks with data are conditioned again
    /// (with their saved hyper-parameters, so predictions are identical); tasks without data
    /// are returned by name with their configuration, to be added back with new data.
    pub fn from_state(
        state: &MultiTaskState,
        device: &B::Device,
        defaults: NtkGpParams,
    ) -> Result<(Self, Vec<(String, NtkGpParams)>), GpError> {
        let network = state
            .network
            .with_params::<B>(&state.weights, &state.buffers, device)?;
        let mut this = Self::new(network, defaults);
        let mut pending = Vec::new();
        for t in &state.tasks {
            let cfg = NtkGpParams {
                strategy: t.strategy,
                noise: t.noise,
                prior_scale: t.prior_scale,
                mean: t.mean,
                ..defaults
            };
            match &t.data {
                Some(d) => {
                    let d_in = d.inputs.first().map_or(0, Vec::len);
                    let x = DMatrix::from_fn(d.inputs.len(), d_in, |i, j| d.inputs[i][j]);
                    this.add_task(&t.name, x, DVector::from_vec(d.targets.clone()), Some(cfg))?;
                }
                None => pending.push((t.name.clone(), cfg)),
            }
        }
        Ok((this, pending))
    }
}

/// The saved state of a [`MultiTask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiTaskState {
    /// The architecture.
    pub network: NetworkConfig,
    /// Flat weights in PyTorch `named_parameters()` order.
    pub weights: Vec<f64>,
    /// Flat buffers (BatchNorm running statistics; empty without).
    pub buffers: Vec<f64>,
    /// The tasks.
    pub tasks: Vec<TaskState>,
}

/// One task's saved state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// Its name.
    pub name: String,
    /// The strategy it used.
    pub strategy: crate::strategy::Strategy,
    /// Noise variance (fixed at the fitted value).
    pub noise: Param,
    /// Prior scale (fixed at the fitted value).
    pub prior_scale: Param,
    /// Prior mean (a fitted constant fixed at its value).
    pub mean: MeanFunction,
    /// Its data, if saved.
    pub data: Option<TaskData>,
}

/// A task's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskData {
    /// Input rows.
    pub inputs: Vec<Vec<f64>>,
    /// Targets.
    pub targets: Vec<f64>,
}

/// $\bar F = \frac1T\sum_t J_t^\top J_t/\sigma_t^2$ on parameter-space blocks.
pub struct MultiTaskFisher<B: Backend> {
    parts: Vec<GgnOperator<B, Jacobian<B>>>,
}

impl<B: Backend> LinearOperator<TensorBlock<B>> for MultiTaskFisher<B>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.parts[0].nrows()
    }
    fn ncols(&self) -> usize {
        self.parts[0].ncols()
    }
    fn apply(&self, v: &TensorBlock<B>) -> TensorBlock<B> {
        let t = self.parts.len() as f64;
        let sum = self
            .parts
            .iter()
            .map(|p| p.apply(v).into_tensor())
            .reduce(|a, b| a + b)
            .expect("at least one task");
        TensorBlock::new(sum.div_scalar(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Strategy;
    use ntk_ops::DefaultBackend;

    type B = DefaultBackend;

    fn task(seed: usize, n: usize) -> (DMatrix<f64>, DVector<f64>) {
        let x = DMatrix::from_fn(n, 1, |i, _| ((i * 5 + seed * 3) as f64 * 0.37).sin() * 2.0);
        let y = DVector::from_fn(n, |i, _| (x[(i, 0)] * (1.0 + seed as f64 * 0.2)).sin());
        (x, y)
    }

    fn hierarchy() -> MultiTask<B> {
        let mlp = ntk_ops::MlpConfig::new(&[1, 10, 1])
            .init::<B>(5, &Default::default())
            .unwrap();
        let defaults = NtkGpParams {
            strategy: Strategy::Dense,
            noise: Param::fit_variance(0.1),
            prior_scale: Param::Fixed(1.0),
            mean: MeanFunction::Constant(Param::Fit {
                init: 0.0,
                lower: -3.0,
                upper: 3.0,
            }),
            ..NtkGpParams::default()
        };
        defaults
            .fit_tasks(
                mlp,
                (0..3).map(|s| {
                    let (x, y) = task(s, 8 + s);
                    (format!("t{s}"), x, y)
                }),
            )
            .unwrap()
    }

    #[test]
    fn tasks_are_independent_and_state_round_trips() {
        let mut mt = hierarchy();
        let xt = DMatrix::from_fn(4, 1, |i, _| i as f64 - 1.5);
        let before = mt.predict("t1", &xt).unwrap();
        // Adding a task leaves the others' cached predictions unchanged.
        let (x, y) = task(7, 6);
        mt.add_task("t7", x, y, None).unwrap();
        assert_eq!(mt.predict("t1", &xt).unwrap(), before);
        assert!(mt.task("t0").unwrap().hyper().noise != mt.task("t1").unwrap().hyper().noise);
        // Serialize through JSON and back: identical predictions for every task.
        let json = serde_json::to_string(&mt.state(true)).unwrap();
        let state: MultiTaskState = serde_json::from_str(&json).unwrap();
        let (back, pending) =
            MultiTask::<B>::from_state(&state, &Default::default(), NtkGpParams::default())
                .unwrap();
        assert!(pending.is_empty());
        for name in mt.names() {
            assert_eq!(
                back.predict(name, &xt).unwrap(),
                mt.predict(name, &xt).unwrap(),
                "{name}"
            );
        }
        // Without data the tasks come back as configurations, hyper-parameters fixed.
        let (empty, pending) = MultiTask::<B>::from_state(
            &mt.state(false),
            &Default::default(),
            NtkGpParams::default(),
        )
        .unwrap();
        assert_eq!(empty.names().count(), 0);
        assert_eq!(pending.len(), 4);
        assert!(matches!(pending[0].1.noise, Param::Fixed(_)));
        assert!(matches!(
            mt.predict("nope", &xt),
            Err(GpError::UnknownTask(_))
        ));
        assert!(mt.remove_task("t7") && !mt.remove_task("t7"));
    }

    #[test]
    fn multi_task_fisher_is_the_mean_of_the_task_gauss_newtons() {
        let mt = hierarchy();
        let fisher = mt.fisher().unwrap();
        let dev = Default::default();
        let p = mt.network().n_params();
        let v = DMatrix::from_fn(p, 2, |i, j| ((i + 3 * j) as f64 * 0.7).cos());
        let got = convert::to_dmatrix_f64(
            fisher
                .apply(&TensorBlock::new(convert::from_dmatrix_f64(&v, &dev)))
                .into_tensor(),
        );
        let mut want = DMatrix::zeros(p, 2);
        for name in mt.names() {
            let t = &mt.tasks[name];
            let jac = Jacobian::new(
                mt.network().clone(),
                convert::from_dmatrix_f64(&t.x, &dev),
                JacobianParams::default(),
            )
            .unwrap();
            let j = convert::to_dmatrix_f64(jac.jacobian().unwrap());
            want += j.transpose() * (&j * &v) / t.gp.hyper().noise;
        }
        want /= 3.0;
        assert!((got - &want).amax() < 1e-10 * want.amax());
    }
}
