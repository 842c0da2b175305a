//! The layer kinds, one file each (each implements the crate's layer trait: forward, tangent, adjoint, initialization).

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

pub use avg_pool::AvgPool2d;
pub use batch_norm::BatchNorm2d;
pub use conv2d::Conv2d;
pub use flatten::Flatten;
pub use heteroscedastic::Heteroscedastic;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use max_pool::MaxPool2d;
pub use residual::Residual;
