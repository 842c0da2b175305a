//! Elementwise activations with their exact derivatives.

use burn::prelude::Backend;
use burn::tensor::{Tensor, activation};

/// The elementwise nonlinearity between Linear layers.
///
/// Each variant matches the PyTorch module of the same name with default
/// arguments (`nn.ELU(alpha=1)`, exact `nn.GELU()`, `nn.Softplus(beta=1)`).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// $\tanh z$.
    #[default]
    Tanh,
    /// $\max(z, 0)$ (derivative taken as $0$ at $z = 0$).
    Relu,
    /// $z$ for $z > 0$, $e^z - 1$ otherwise.
    Elu,
    /// $z\,\Phi(z)$ with the exact normal CDF $\Phi$.
    Gelu,
    /// $1 / (1 + e^{-z})$.
    Sigmoid,
    /// $\log(1 + e^z)$.
    Softplus,
}

impl Activation {
    /// Every activation, in declaration order.
    pub const ALL: [Activation; 6] = [
        Self::Tanh,
        Self::Relu,
        Self::Elu,
        Self::Gelu,
        Self::Sigmoid,
        Self::Softplus,
    ];

    /// $\sigma(z)$ elementwise.
    pub fn apply<B: Backend, const D: usize>(self, z: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Tanh => z.tanh(),
            Self::Relu => activation::relu(z),
            Self::Elu => activation::elu(z, 1.0),
            // Built from erf rather than `activation::gelu`: burn-autodiff 0.21
            // differentiates the exact GELU with the tanh approximation's
            // derivative (errors ~1e-4), which would corrupt the generic path.
            Self::Gelu => gelu(z),
            Self::Sigmoid => sigmoid(z),
            Self::Softplus => softplus(z),
        }
    }

    /// $\sigma(z)$ and $\sigma'(z)$ together, sharing work where possible.
    pub fn apply_with_derivative<B: Backend, const D: usize>(
        self,
        z: Tensor<B, D>,
    ) -> (Tensor<B, D>, Tensor<B, D>) {
        match self {
            Self::Tanh => {
                let a = z.tanh();
                // tanh' = 1 - tanh²
                let d = a.clone().square().neg().add_scalar(1.0);
                (a, d)
            }
            Self::Relu => {
                // mask_fill keeps z's dtype (bool → float would take the device default)
                let d = z
                    .ones_like()
                    .mask_fill(z.clone().lower_equal_elem(0.0), 0.0);
                (activation::relu(z), d)
            }
            Self::Elu => {
                // elu' = 1 for z > 0, e^z = elu(z) + 1 otherwise
                let pos = z.clone().greater_elem(0.0);
                let a = activation::elu(z, 1.0);
                let d = a.clone().add_scalar(1.0).mask_fill(pos, 1.0);
                (a, d)
            }
            Self::Gelu => {
                // gelu' = Φ(z) + z φ(z)
                let cdf = z
                    .clone()
                    .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
                    .erf()
                    .add_scalar(1.0)
                    .mul_scalar(0.5);
                let pdf = z
                    .clone()
                    .square()
                    .mul_scalar(-0.5)
                    .exp()
                    .mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt());
                let a = z.clone() * cdf.clone();
                (a, cdf + z * pdf)
            }
            Self::Sigmoid => {
                let s = sigmoid(z);
                let d = s.clone() * s.clone().neg().add_scalar(1.0);
                (s, d)
            }
            Self::Softplus => (softplus(z.clone()), sigmoid(z)),
        }
    }
}

impl Activation {
    /// $\sigma(z)$ and $\sigma'(z)$ of one number, for host loops, in the order of
    /// operations of [`apply_with_derivative`](Self::apply_with_derivative) (GELU's erf is
    /// libm's, in `f64`, as burn-ndarray's).
    pub fn scalar_with_derivative<T: nalgebra::RealField + Copy>(self, z: T) -> (T, T) {
        let one = T::one();
        match self {
            Self::Tanh => {
                let a = z.tanh();
                (a, one - a * a)
            }
            Self::Relu if z > T::zero() => (z, one),
            Self::Relu => (T::zero(), T::zero()),
            Self::Elu if z > T::zero() => (z, one),
            Self::Elu => {
                let e = z.exp();
                (e - one, e)
            }
            Self::Sigmoid => {
                let s = sigmoid_scalar(z);
                (s, s * (one - s))
            }
            Self::Softplus => (softplus_scalar(z), sigmoid_scalar(z)),
            Self::Gelu => {
                let c = |v: f64| nalgebra::convert::<f64, T>(v);
                let s: f64 = (z * c(std::f64::consts::FRAC_1_SQRT_2))
                    .to_subset()
                    .unwrap_or(f64::NAN);
                let cdf = (c(libm::erf(s)) + one) * c(0.5);
                let pdf = (z * z * c(-0.5)).exp() * c(1.0 / (2.0 * std::f64::consts::PI).sqrt());
                (z * cdf, cdf + z * pdf)
            }
        }
    }
}

/// [`softplus`] of one number.
pub fn softplus_scalar<T: nalgebra::RealField + Copy>(z: T) -> T {
    z.max(T::zero()) + (-z.abs()).exp().ln_1p()
}

/// [`sigmoid`] of one number, $\tfrac12 (1 + \tanh(z/2))$.
pub fn sigmoid_scalar<T: nalgebra::RealField + Copy>(z: T) -> T {
    let half = nalgebra::convert::<f64, T>(0.5);
    half * (T::one() + (half * z).tanh())
}

/// Overflow-free softplus: $\log(1 + e^z) = \max(z, 0) + \log(1 + e^{-|z|})$.
///
/// $-|z|$ is formed as $z - 2\max(z, 0)$ (the same bits): burn-ndarray 0.21's `abs` returns
/// wrong values for a non-contiguous `f64` tensor (a convolution's output after a permute) on
/// CPUs without AVX-512, found on an AVX2 AMD EPYC (2026-12-07).
pub fn softplus<B: Backend, const D: usize>(z: Tensor<B, D>) -> Tensor<B, D> {
    let relu = activation::relu(z.clone());
    let neg_abs = z - relu.clone().mul_scalar(2.0);
    relu + neg_abs.exp().log1p()
}

/// Full-precision sigmoid, $\tfrac12 (1 + \tanh(z/2))$: burn 0.21's
/// `activation::sigmoid` computes in `f32` whatever the backend's precision.
pub fn sigmoid<B: Backend, const D: usize>(z: Tensor<B, D>) -> Tensor<B, D> {
    z.mul_scalar(0.5).tanh().add_scalar(1.0).mul_scalar(0.5)
}

/// Softmax along `dim`, $e^{z - \max z} / \sum e^{z - \max z}$, in the backend's precision.
pub fn softmax<B: Backend, const D: usize>(z: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let e = (z.clone() - z.max_dim(dim)).exp();
    e.clone() / e.sum_dim(dim)
}

/// Exact GELU, $z \Phi(z) = \tfrac{z}{2}(1 + \operatorname{erf}(z/\sqrt2))$, from elementary
/// tensor operations so that autodiff differentiates it exactly.
pub fn gelu<B: Backend, const D: usize>(z: Tensor<B, D>) -> Tensor<B, D> {
    z.clone()
        * z.mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
            .erf()
            .add_scalar(1.0)
            .mul_scalar(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    /// Softplus of a non-contiguous 4-D tensor (strides as after a permute) equals the scalar
    /// function elementwise, bit for bit.
    #[test]
    fn softplus_of_a_strided_tensor_is_exact() {
        type T = NdArray<f64>;
        let dev = Default::default();
        let vals: Vec<f64> = (0..64).map(|i| (i as f64 - 32.0) * 0.173).collect();
        let t = crate::convert::tensor_from_f64::<T>(vals.clone(), 4, 16, &dev)
            .reshape([2, 2, 4, 4])
            .swap_dims(1, 3);
        let back = softplus(t).swap_dims(1, 3).reshape([4, 16]);
        let got = crate::convert::to_vec_f64(back);
        for (g, v) in got.iter().zip(&vals) {
            assert_eq!(*g, softplus_scalar(*v), "softplus({v})");
        }
    }

    /// The scalar forms equal the tensor forms, value and derivative, across the range
    /// (large |z| included, where the overflow-free softplus matters).
    #[test]
    fn scalar_forms_match_the_tensor_forms() {
        let zs: Vec<f64> = (-400..=400).map(|i| i as f64 * 0.11).collect();
        let dev = Default::default();
        for act in Activation::ALL {
            let t = crate::convert::tensor1_from_f64::<NdArray<f64>>(zs.clone(), &dev);
            let (a, d) = act.apply_with_derivative(t);
            let (a, d) = (crate::convert::to_vec_f64(a), crate::convert::to_vec_f64(d));
            for (i, &z) in zs.iter().enumerate() {
                let (sa, sd) = act.scalar_with_derivative(z);
                assert!(
                    (sa - a[i]).abs() <= 1e-15 * a[i].abs().max(1.0),
                    "{act:?} σ({z})"
                );
                assert!(
                    (sd - d[i]).abs() <= 1e-15 * d[i].abs().max(1.0),
                    "{act:?} σ'({z})"
                );
            }
        }
        // f32 GELU from the f64 erf, within f32 rounding of the f64 values
        for &z in &zs {
            let (a, d) = Activation::Gelu.scalar_with_derivative(z as f32);
            let (a64, d64) = Activation::Gelu.scalar_with_derivative(z);
            assert!((a as f64 - a64).abs() <= 4e-7 * a64.abs().max(1.0));
            assert!((d as f64 - d64).abs() <= 4e-7 * d64.abs().max(1.0));
        }
    }
}
