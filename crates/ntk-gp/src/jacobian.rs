//! The Jacobian operator behind an [`NtkGp`](crate::ntk::NtkGp): the host one on the CPU
//! backend, the tensor one elsewhere.
//!
//! [`HostJacobian`] (one matrix product per layer on host factors, 2–4× the anchors' speed
//! per product) serves burn-ndarray for every activation but GELU; [`MlpJacobian`] (burn
//! tensor operations, generic over the backend) serves GELU networks and the GPU. Both give
//! the same numbers (tested in ntk-ops to 1e-12).

use burn::prelude::Backend;
use burn::tensor::Tensor;
use nalgebra::RealField;
use ntk_ops::{
    Activation, HostJacobian, HostNtk, JacobianOperator, JacobianOptions, Mlp, MlpJacobian,
    OpsError, convert,
};

/// An MLP's Jacobian operator, host or tensor (see the [module docs](self)).
#[derive(Debug, Clone)]
pub enum NtkJacobian<B: Backend> {
    /// Products on host factors (CPU backends).
    Host(HostJacobian<B>),
    /// Products in burn tensor operations (any backend).
    Tensor(MlpJacobian<B>),
}

/// Forwards one method to whichever operator is inside.
macro_rules! forward {
    ($self:ident, $j:ident => $e:expr) => {
        match $self {
            Self::Host($j) => $e,
            Self::Tensor($j) => $e,
        }
    };
}

impl<B: Backend> NtkJacobian<B>
where
    B::FloatElem: RealField + Copy,
{
    /// The host operator when `mlp` lives on burn-ndarray and has no GELU, else the tensor one.
    pub fn new(mlp: Mlp<B>, x: Tensor<B, 2>, options: JacobianOptions) -> Result<Self, OpsError> {
        let on_cpu = B::name(&mlp.device()).contains("ndarray");
        if on_cpu && mlp.config().activation != Activation::Gelu {
            Ok(Self::Host(HostJacobian::new(mlp, x, options)?))
        } else {
            Ok(Self::Tensor(MlpJacobian::new(mlp, x, options)?))
        }
    }

    /// The network.
    pub fn mlp(&self) -> &Mlp<B> {
        forward!(self, j => j.mlp())
    }

    /// The inputs $X$ (`[n, d]`).
    pub fn inputs(&self) -> Tensor<B, 2> {
        match self {
            Self::Host(j) => j.inputs(),
            Self::Tensor(j) => j.inputs().clone(),
        }
    }

    /// The NTK matrix $J_1 J_2^\top$ between this operator's inputs and `other`'s
    /// (`[n_1 o, n_2 o]`): structured products, on the host for host operators.
    pub fn ntk_matrix(&self, other: &Self) -> Result<Tensor<B, 2>, OpsError> {
        match (self, other) {
            (Self::Tensor(a), Self::Tensor(b)) => ntk_ops::ntk_matrix(a, b),
            _ => {
                let host = |j: &Self| {
                    HostNtk::<B::FloatElem>::new(j.mlp(), &convert::to_dmatrix_f64(j.inputs()))
                };
                let k = host(self)?.cross(&host(other)?)?;
                Ok(convert::from_dmatrix_elems::<B>(&k, &self.mlp().device()))
            }
        }
    }

    /// The diagonal of $K = J J^\top$ (`n o` entries).
    pub fn ntk_diagonal(&self) -> Result<Tensor<B, 1>, OpsError> {
        match self {
            Self::Tensor(j) => ntk_ops::ntk_diagonal(j),
            Self::Host(j) => match JacobianOperator::ntk_diagonal(j) {
                Some(d) => Ok(d),
                None => {
                    let h = HostNtk::<B::FloatElem>::new(
                        j.mlp(),
                        &convert::to_dmatrix_f64(j.inputs()),
                    )?;
                    let d = h.diagonal();
                    let len = d.len();
                    Ok(convert::tensor_from_elems::<B, 1>(
                        d,
                        [len],
                        &j.mlp().device(),
                    ))
                }
            },
        }
    }

    /// The explicit Jacobian (`[n·o, p]`), for small problems.
    pub fn jacobian(&self) -> Result<Tensor<B, 2>, OpsError> {
        forward!(self, j => j.jacobian())
    }
}

impl<B: Backend> JacobianOperator<B> for NtkJacobian<B>
where
    B::FloatElem: RealField + Copy,
{
    fn n_points(&self) -> usize {
        forward!(self, j => j.n_points())
    }
    fn n_outputs(&self) -> usize {
        forward!(self, j => j.n_outputs())
    }
    fn n_params(&self) -> usize {
        forward!(self, j => j.n_params())
    }
    fn device(&self) -> B::Device {
        forward!(self, j => j.device())
    }
    fn outputs(&self) -> ntk_ops::Result<Tensor<B, 2>> {
        forward!(self, j => j.outputs())
    }
    fn jvp(&self, v: Tensor<B, 2>) -> ntk_ops::Result<Tensor<B, 2>> {
        forward!(self, j => j.jvp(v))
    }
    fn vjp(&self, u: Tensor<B, 2>) -> ntk_ops::Result<Tensor<B, 2>> {
        forward!(self, j => j.vjp(u))
    }
    fn ntk_diagonal(&self) -> Option<Tensor<B, 1>> {
        forward!(self, j => j.ntk_diagonal())
    }
    fn ntk_row(&self, i: usize) -> Option<Tensor<B, 1>> {
        forward!(self, j => j.ntk_row(i))
    }
    fn gram_diagonal(&self) -> Option<Tensor<B, 1>> {
        forward!(self, j => j.gram_diagonal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use ntk_ops::{MlpConfig, convert};

    #[test]
    fn host_on_ndarray_tensor_for_gelu_same_products() {
        let dev = Default::default();
        let x = convert::tensor_from_f64::<NdArray<f64>>(
            (0..24).map(|i| (i as f64 * 0.4).sin()).collect(),
            12,
            2,
            &dev,
        );
        let tanh = MlpConfig::new(&[2, 6, 1])
            .init::<NdArray<f64>>(1, &dev)
            .unwrap();
        let gelu = MlpConfig::new(&[2, 6, 1])
            .with_activation(Activation::Gelu)
            .init::<NdArray<f64>>(1, &dev)
            .unwrap();
        let opts = JacobianOptions::default();
        let host = NtkJacobian::new(tanh.clone(), x.clone(), opts).unwrap();
        assert!(matches!(host, NtkJacobian::Host(_)));
        assert!(matches!(
            NtkJacobian::new(gelu, x.clone(), opts).unwrap(),
            NtkJacobian::Tensor(_)
        ));
        let tensor = NtkJacobian::Tensor(MlpJacobian::new(tanh, x, opts).unwrap());
        let u = convert::tensor_from_f64::<NdArray<f64>>(vec![0.5; 12], 12, 1, &dev);
        let (a, b) = (
            convert::to_dmatrix_f64(host.vjp(u.clone()).unwrap()),
            convert::to_dmatrix_f64(tensor.vjp(u).unwrap()),
        );
        assert!((a - &b).amax() < 1e-12 * b.amax());
        assert_eq!(host.n_params(), tensor.n_params());
        let (k1, k2) = (
            convert::to_dmatrix_f64(host.ntk_matrix(&host).unwrap()),
            convert::to_dmatrix_f64(tensor.ntk_matrix(&tensor).unwrap()),
        );
        assert!((&k1 - &k2).amax() < 1e-12 * k2.amax());
        assert!((&k1 - k1.transpose()).amax() < 1e-12 * k2.amax());
        let (d1, d2) = (
            convert::to_vec_f64(host.ntk_diagonal().unwrap()),
            convert::to_vec_f64(tensor.ntk_diagonal().unwrap()),
        );
        assert!(
            d1.iter()
                .zip(&d2)
                .all(|(a, b)| (a - b).abs() < 1e-12 * b.abs().max(1.0))
        );
        assert_eq!(
            convert::to_dmatrix_f64(host.inputs()),
            convert::to_dmatrix_f64(tensor.inputs())
        );
    }
}
