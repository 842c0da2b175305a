//! Helpers shared by the unit tests.

use burn::tensor::Tensor;

use crate::convert::to_vec_f64;

/// The backend the tests run on.
pub type TestBackend = burn_ndarray::NdArray<f64>;

/// $\langle A, B \rangle$ over all entries.
pub fn dot(a: &Tensor<TestBackend, 2>, b: &Tensor<TestBackend, 2>) -> f64 {
    to_vec_f64(a.clone())
        .iter()
        .zip(to_vec_f64(b.clone()))
        .map(|(x, y)| x * y)
        .sum()
}

/// $\lVert a - b \rVert / \max(\lVert b \rVert, 10^{-300})$.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}
