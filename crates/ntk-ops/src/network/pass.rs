//! Passes over a sequence of compiled layers: forward (plain or saving factors), tangent
//! and adjoint.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use super::layer::{Batch, Grads, Saved};
use super::plan::{Node, Values};

/// $f$ of the sequence.
pub(crate) fn forward<B: Backend>(
    nodes: &[Node],
    values: &Values<B>,
    mut a: Tensor<B, 4>,
) -> Tensor<B, 4> {
    for node in nodes {
        a = node.forward(values, a);
    }
    a
}

/// $f$ of the sequence and what every layer saves.
pub(crate) fn forward_saving<B: Backend>(
    nodes: &[Node],
    values: &Values<B>,
    mut a: Tensor<B, 4>,
) -> (Tensor<B, 4>, Vec<Saved<B>>) {
    let mut saved = Vec::with_capacity(nodes.len());
    for node in nodes {
        let (y, s) = node.forward_saving(values, a);
        saved.push(s);
        a = y;
    }
    (a, saved)
}

/// The tangent of the sequence's output for input tangent `xdot` (`None` = zero) and
/// parameter tangents `v` (per layout entry, `[k, numel]`).
pub(crate) fn tangent<B: Backend>(
    nodes: &[Node],
    saved: &[Saved<B>],
    values: &Values<B>,
    batch: Batch,
    mut xdot: Option<Tensor<B, 4>>,
    v: &[Tensor<B, 2>],
) -> Option<Tensor<B, 4>> {
    for (node, s) in nodes.iter().zip(saved) {
        xdot = node.tangent(values, batch, s, xdot, v);
    }
    xdot
}

/// The adjoint pass: accumulates $\bar\theta$ into `grads` and returns $\bar x$ when
/// `need_input` (the first layer skips it otherwise).
pub(crate) fn adjoint<B: Backend>(
    nodes: &[Node],
    saved: &[Saved<B>],
    values: &Values<B>,
    batch: Batch,
    mut ybar: Tensor<B, 4>,
    grads: &mut Grads<B>,
    need_input: bool,
) -> Option<Tensor<B, 4>> {
    for (pos, (node, s)) in nodes.iter().zip(saved).enumerate().rev() {
        let input_needed = need_input || pos > 0;
        match node.adjoint(values, batch, s, ybar, grads, input_needed) {
            Some(x) if input_needed => ybar = x,
            _ => return None,
        }
    }
    Some(ybar)
}
