//! A [`Network`] as a burn [`Module`], for the generic autodiff path.

use burn::module::{Module, Param};
use burn::prelude::Backend;
use burn::tensor::Tensor;

use super::{Network, NetworkConfig, pass};
use burn::backend::Autodiff;

use crate::autodiff::AutodiffJacobian;
use crate::convert::tensor1_from_f64;

/// The generic-path Jacobian type of a [`Network`] (see [`Network::generic_jacobian`]).
pub type GenericJacobian<B> = AutodiffJacobian<
    B,
    NetworkModule<Autodiff<Autodiff<B>>>,
    fn(
        &NetworkModule<Autodiff<Autodiff<B>>>,
        Tensor<Autodiff<Autodiff<B>>, 2>,
    ) -> Tensor<Autodiff<Autodiff<B>>, 2>,
>;

/// A [`Network`] as a burn [`Module`] (parameters visited in layout order), for the
/// generic autodiff path.
#[derive(Module, Debug)]
pub struct NetworkModule<B: Backend> {
    params: Vec<Param<Tensor<B, 1>>>,
    #[module(skip)]
    buffers: Vec<f64>,
    #[module(skip)]
    config: NetworkConfig,
}

impl<B: Backend> NetworkModule<B> {
    /// The module of `net`'s values on `device` of backend `B`.
    pub fn from_network<B0: Backend>(net: &Network<B0>, device: &B::Device) -> Self {
        Self {
            params: net
                .params
                .iter()
                .map(|p| {
                    Param::from_tensor(Tensor::from_data(
                        p.to_data(),
                        crate::convert::float_opts::<B>(device),
                    ))
                })
                .collect(),
            buffers: net.buffers_flat(),
            config: net.config.clone(),
        }
    }

    /// $f(X)$, `[n, o]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let plan = self
            .config
            .plan()
            .expect("validated when the module was built");
        let params: Vec<_> = self.params.iter().map(|p| p.val()).collect();
        let dev = x.device();
        let buffers: Vec<_> = plan
            .buffers
            .specs()
            .iter()
            .map(|s| {
                tensor1_from_f64::<B>(self.buffers[s.offset..s.offset + s.numel()].to_vec(), &dev)
            })
            .collect();
        let values = super::Values {
            params: &params,
            buffers: &buffers,
            layout: &plan.layout,
        };
        let m = x.dims()[0];
        pass::forward(&plan.nodes, &values, x.reshape(plan.input.batch(m)))
            .reshape([m, plan.output.numel()])
    }
}
