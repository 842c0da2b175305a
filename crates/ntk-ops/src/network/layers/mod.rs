//! The layer kinds, one file each (see [`layer`](super::layer) for the trait they implement).

pub mod activation;
pub mod avg_pool;
pub mod batch_norm;
pub mod conv2d;
pub mod flatten;
pub mod heteroscedastic;
pub mod layer_norm;
pub mod linear;
pub mod max_pool;
pub mod residual;
