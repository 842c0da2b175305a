//! Bounded maximization of a smooth objective (the log marginal likelihood) by L-BFGS.
//!
//! Hyper-parameters live in log space with box bounds $\ell_i \le x_i \le u_i$. The box is
//! removed by the smooth map $x_i = \ell_i + (u_i - \ell_i)\,\mathrm{sigmoid}(z_i)$, and argmin's
//! L-BFGS (Nocedal 1980) with a Moré–Thuente line search runs on $z$ unconstrained; the
//! chain rule gives $\partial/\partial z_i = (x_i - \ell_i)(u_i - x_i)/(u_i-\ell_i)\cdot\partial/\partial x_i$.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason, TerminationStatus};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use crate::error::GpError;

/// How a bounded maximization is run.
///
/// Every budget is a hard bound: L-BFGS iterations bound the outer loop, and
/// `max_evaluations` also bounds the line searches inside it (argmin's Moré–Thuente search
/// has no iteration limit of its own and can cycle forever where the objective is not
/// finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaximizeParams {
    /// Maximum number of L-BFGS iterations.
    pub max_iters: u64,
    /// Stop when the gradient norm (in the unconstrained variables) falls below this.
    pub grad_tolerance: f64,
    /// Maximum number of objective evaluations, line searches included; running out is
    /// [`GpError::Budget`].
    pub max_evaluations: u64,
    /// Wall-clock limit of the whole maximization (none by default); running out is
    /// [`GpError::Budget`].
    pub time_limit: Option<Duration>,
}

impl Default for MaximizeParams {
    fn default() -> Self {
        Self {
            max_iters: 200,
            grad_tolerance: 1e-6,
            max_evaluations: 2000,
            time_limit: None,
        }
    }
}

/// The result of a bounded maximization.
#[derive(Debug, Clone, PartialEq)]
pub struct Maximum {
    /// The best point found (within the bounds).
    pub x: Vec<f64>,
    /// The objective there.
    pub value: f64,
    /// L-BFGS iterations run.
    pub iterations: u64,
    /// Whether the solver met its convergence test (gradient or cost tolerance); `false`
    /// when it stopped for another reason (iteration limit, a failed line search), which
    /// `termination` names.
    pub converged: bool,
    /// Why the solver stopped, in words (naming any coordinate left at a bound).
    pub termination: String,
    /// Per coordinate: whether the result sits at its lower or upper bound (within a
    /// millionth of the box), where the objective may still rise beyond the box.
    pub at_bound: Vec<bool>,
}

/// An objective with its gradient; `Err` aborts the search.
pub trait Objective {
    /// The value $g(x)$ and gradient $\nabla g(x)$ at `x`.
    fn value_and_gradient(&self, x: &[f64]) -> Result<(f64, Vec<f64>), GpError>;
}

impl<F: Fn(&[f64]) -> Result<(f64, Vec<f64>), GpError>> Objective for F {
    fn value_and_gradient(&self, x: &[f64]) -> Result<(f64, Vec<f64>), GpError> {
        self(x)
    }
}

/// Maximizes `objective` over the box `[lower, upper]` from `x0` (clamped into the box).
pub fn maximize_bounded(
    objective: &dyn Objective,
    x0: &[f64],
    lower: &[f64],
    upper: &[f64],
    params: MaximizeParams,
) -> Result<Maximum, GpError> {
    let d = x0.len();
    if lower.len() != d || upper.len() != d {
        return Err(GpError::Shape {
            what: "bounds vs starting point",
            expected: d,
            got: lower.len().min(upper.len()),
        });
    }
    if let Some(i) = (0..d).find(|&i| {
        lower[i].partial_cmp(&upper[i]) != Some(std::cmp::Ordering::Less) || !x0[i].is_finite()
    }) {
        return Err(GpError::InvalidParam {
            name: "bounds",
            reason: format!(
                "coordinate {i}: need a finite start and lower < upper, got x0 = {}, [{}, {}]",
                x0[i], lower[i], upper[i]
            ),
        });
    }
    let stopped = Mutex::new(None);
    let mut problem = Boxed {
        objective,
        lower,
        upper,
        scale: 1.0,
        cache: Mutex::new(None),
        evaluations: AtomicU64::new(0),
        max_evaluations: params.max_evaluations,
        deadline: params.time_limit.map(|t| (Instant::now() + t, t)),
        stopped: &stopped,
    };
    let z0: Vec<f64> = (0..d)
        .map(|i| {
            // Keep the start strictly inside so the logit is finite.
            let t = ((x0[i] - lower[i]) / (upper[i] - lower[i])).clamp(1e-6, 1.0 - 1e-6);
            (t / (1.0 - t)).ln()
        })
        .collect();
    // L-BFGS's first step is the raw gradient; a log marginal likelihood's gradient grows with
    // n, and a step of that length in z saturates the sigmoid, where the gradient vanishes and
    // the solver would stop at a bound reporting convergence. Scaling the objective so that
    // the starting gradient has norm at most 1 keeps the first step within the box's interior;
    // the tolerances scale with it.
    let (c0, g0) = problem.eval(&z0).map_err(lbfgs_failed)?;
    if !c0.is_finite() || g0.iter().any(|g| !g.is_finite()) {
        return Err(GpError::NonFiniteObjective {
            at: "the start of the fit".into(),
            value: -c0,
        });
    }
    let g0_norm = g0.iter().map(|g| g * g).sum::<f64>().sqrt();
    if g0_norm.is_finite() && g0_norm > 1.0 {
        problem.scale = 1.0 / g0_norm;
    }
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(params.grad_tolerance * problem.scale)
        .map_err(lbfgs_failed)?
        .with_tolerance_cost(1e-12 * problem.scale)
        .map_err(lbfgs_failed)?;
    let scale = problem.scale;
    let result = Executor::new(problem, solver)
        .configure(|s| s.param(z0).max_iters(params.max_iters))
        .ctrlc(false)
        .run();
    // A budget that ran out stops the search from inside (argmin sees an error): say which.
    if let Some(reason) = stopped.lock().expect("never poisoned").take() {
        return Err(GpError::Budget {
            what: "the hyper-parameter fit (L-BFGS)",
            reason,
        });
    }
    let result = result.map_err(lbfgs_failed)?;
    let state = result.state();
    let z = state.get_best_param().ok_or_else(|| GpError::Solver {
        solver: "L-BFGS",
        message: "no iterate was evaluated".into(),
    })?;
    let x: Vec<f64> = (0..d).map(|i| to_box(z[i], lower[i], upper[i])).collect();
    let at_bound: Vec<bool> = (0..d)
        .map(|i| {
            let t = (x[i] - lower[i]) / (upper[i] - lower[i]);
            !(1e-6..=1.0 - 1e-6).contains(&t)
        })
        .collect();
    let converged = matches!(
        state.get_termination_status(),
        TerminationStatus::Terminated(
            TerminationReason::SolverConverged | TerminationReason::TargetCostReached
        )
    );
    if !state.get_best_cost().is_finite() {
        return Err(GpError::NonFiniteObjective {
            at: "the end of the fit".into(),
            value: -state.get_best_cost() / scale,
        });
    }
    let mut termination = state.get_termination_status().to_string();
    for (i, _) in at_bound.iter().enumerate().filter(|(_, b)| **b) {
        let (which, v) = if x[i] - lower[i] < upper[i] - x[i] {
            ("lower", lower[i])
        } else {
            ("upper", upper[i])
        };
        termination.push_str(&format!(
            "; coordinate {i} is at its {which} bound {v:e}: the objective may rise beyond it"
        ));
    }
    Ok(Maximum {
        value: -state.get_best_cost() / scale,
        iterations: state.get_iter(),
        converged,
        termination,
        at_bound,
        x,
    })
}

fn to_box(z: f64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) / (1.0 + (-z).exp())
}

/// One evaluation in unconstrained coordinates: the point, the cost and its gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// The negated objective in unconstrained coordinates, as argmin wants it.
struct Boxed<'a> {
    objective: &'a dyn Objective,
    lower: &'a [f64],
    upper: &'a [f64],
    /// Factor on the cost and gradient handed to argmin (the cache holds them unscaled).
    scale: f64,
    /// The last evaluation: argmin asks for cost and gradient separately.
    cache: Mutex<Option<Evaluation>>,
    /// Objective evaluations so far, and their limit.
    evaluations: AtomicU64,
    max_evaluations: u64,
    /// When the time runs out, and the limit as given.
    deadline: Option<(Instant, Duration)>,
    /// Why a budget stopped the search, if one did.
    stopped: &'a Mutex<Option<String>>,
}

impl Boxed<'_> {
    fn eval(&self, z: &[f64]) -> Result<(f64, Vec<f64>), argmin::core::Error> {
        let mut cache = self.cache.lock().expect("cache lock is never poisoned");
        if let Some((cz, v, g)) = cache.as_ref()
            && cz.as_slice() == z
        {
            return Ok((*v, g.clone()));
        }
        let count = self.evaluations.fetch_add(1, Ordering::Relaxed) + 1;
        let over = if count > self.max_evaluations {
            Some(format!(
                "{} objective evaluations used (the limit) without converging",
                self.max_evaluations
            ))
        } else {
            self.deadline
                .filter(|(at, _)| Instant::now() > *at)
                .map(|(_, t)| format!("the time limit of {:.1} s ran out", t.as_secs_f64()))
        };
        if let Some(reason) = over {
            *self.stopped.lock().expect("never poisoned") = Some(reason.clone());
            return Err(argmin::core::Error::msg(reason));
        }
        let x: Vec<f64> = (0..z.len())
            .map(|i| to_box(z[i], self.lower[i], self.upper[i]))
            .collect();
        let (value, grad) = self.objective.value_and_gradient(&x)?;
        // Minimize -g; chain rule through the sigmoid map.
        let gz: Vec<f64> = (0..z.len())
            .map(|i| {
                let (lo, hi) = (self.lower[i], self.upper[i]);
                -grad[i] * (x[i] - lo) * (hi - x[i]) / (hi - lo)
            })
            .collect();
        let cost = if value.is_finite() {
            -value
        } else {
            f64::INFINITY
        };
        *cache = Some((z.to_vec(), cost, gz.clone()));
        Ok((cost, gz))
    }
}

impl CostFunction for Boxed<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, z: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(z)?.0 * self.scale)
    }
}

impl Gradient for Boxed<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, z: &Self::Param) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self
            .eval(z)?
            .1
            .into_iter()
            .map(|g| g * self.scale)
            .collect())
    }
}

/// An argmin error as [`GpError::Solver`].
fn lbfgs_failed(e: impl std::fmt::Display) -> GpError {
    GpError::Solver {
        solver: "L-BFGS",
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_interior_maximum() {
        // g(x) = -(x0 - 1)^2 - 3 (x1 + 2)^2
        let g = |x: &[f64]| {
            Ok((
                -(x[0] - 1.0).powi(2) - 3.0 * (x[1] + 2.0).powi(2),
                vec![-2.0 * (x[0] - 1.0), -6.0 * (x[1] + 2.0)],
            ))
        };
        let m = maximize_bounded(
            &g,
            &[0.0, 0.0],
            &[-5.0, -5.0],
            &[5.0, 5.0],
            Default::default(),
        )
        .unwrap();
        assert!(
            (m.x[0] - 1.0).abs() < 1e-5 && (m.x[1] + 2.0).abs() < 1e-5,
            "{m:?}"
        );
    }

    #[test]
    fn stops_at_an_active_bound_and_says_so() {
        // g(x) = x is largest at the upper bound.
        let g = |x: &[f64]| Ok((x[0], vec![1.0]));
        let m = maximize_bounded(&g, &[0.0], &[-1.0], &[2.0], Default::default()).unwrap();
        assert!(m.x[0] <= 2.0 && m.x[0] > 1.99, "{m:?}");
        assert_eq!(m.at_bound, vec![true], "{m:?}");
        assert!(m.termination.contains("upper bound"), "{m:?}");
    }

    #[test]
    fn a_steep_start_does_not_jump_to_a_bound() {
        // g(x) = -(x - 10)^2 on [-14, 14] from x = 0: the raw first step (gradient 140 in z)
        // lands in the saturated sigmoid next to the upper bound, which is better than the
        // start and has a vanishing gradient, so an unscaled L-BFGS stops there "converged".
        let g = |x: &[f64]| Ok((-(x[0] - 10.0).powi(2), vec![-2.0 * (x[0] - 10.0)]));
        let m = maximize_bounded(&g, &[0.0], &[-14.0], &[14.0], Default::default()).unwrap();
        assert!((m.x[0] - 10.0).abs() < 1e-4, "{m:?}");
        assert_eq!(m.at_bound, vec![false]);
        assert!((m.value - g(&m.x).unwrap().0).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn rejects_an_empty_box() {
        let g = |x: &[f64]| Ok((x[0], vec![1.0]));
        assert!(matches!(
            maximize_bounded(&g, &[0.0], &[1.0], &[1.0], Default::default()),
            Err(GpError::InvalidParam { name: "bounds", .. })
        ));
    }

    #[test]
    fn a_non_finite_start_is_a_typed_error_not_a_hang() {
        // What targets of scale 1e200 do to a log marginal likelihood: -inf everywhere.
        let g = |_: &[f64]| Ok((f64::NEG_INFINITY, vec![f64::NAN]));
        let e = maximize_bounded(&g, &[0.0], &[-1.0], &[1.0], Default::default()).unwrap_err();
        assert!(matches!(e, GpError::NonFiniteObjective { .. }), "{e:?}");
        assert!(e.to_string().contains("standardize"), "{e}");
    }

    #[test]
    fn an_objective_that_turns_non_finite_is_bounded_by_the_evaluation_budget() {
        // Finite at the start, -inf at every other point: the line search can never succeed.
        let g = |x: &[f64]| {
            if x[0] == 0.0 {
                Ok((0.0, vec![1.0]))
            } else {
                Ok((f64::NEG_INFINITY, vec![f64::NAN]))
            }
        };
        let params = MaximizeParams {
            max_evaluations: 50,
            ..Default::default()
        };
        match maximize_bounded(&g, &[0.0], &[-1.0], &[1.0], params) {
            // Either the budget stops it, or the search gives up and says it did not converge.
            Err(GpError::Budget { reason, .. }) => assert!(reason.contains("50"), "{reason}"),
            Ok(m) => assert!(!m.converged, "{m:?}"),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn the_time_limit_stops_a_slow_fit() {
        let g = |x: &[f64]| {
            std::thread::sleep(Duration::from_millis(20));
            Ok((-(x[0] - 0.3).powi(2), vec![-2.0 * (x[0] - 0.3)]))
        };
        let params = MaximizeParams {
            time_limit: Some(Duration::from_millis(1)),
            ..Default::default()
        };
        let e = maximize_bounded(&g, &[0.0], &[-1.0], &[1.0], params).unwrap_err();
        assert!(
            matches!(&e, GpError::Budget { reason, .. } if reason.contains("time limit")),
            "{e:?}"
        );
    }

    #[test]
    fn a_converged_fit_says_so() {
        let g = |x: &[f64]| Ok((-(x[0] - 0.3).powi(2), vec![-2.0 * (x[0] - 0.3)]));
        let m = maximize_bounded(&g, &[0.0], &[-1.0], &[1.0], Default::default()).unwrap();
        assert!(m.converged, "{m:?}");
        let few = MaximizeParams {
            max_iters: 1,
            ..Default::default()
        };
        let g = |x: &[f64]| {
            Ok((
                -(x[0] - 0.3).powi(4) - (x[1] + 0.2).powi(2) * 10.0,
                vec![-4.0 * (x[0] - 0.3).powi(3), -20.0 * (x[1] + 0.2)],
            ))
        };
        let m = maximize_bounded(&g, &[0.9, 0.9], &[-1.0; 2], &[1.0; 2], few).unwrap();
        assert!(!m.converged && m.termination.contains("Maximum"), "{m:?}");
    }
}
