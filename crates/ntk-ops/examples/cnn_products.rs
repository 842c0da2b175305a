//! A small CNN, its Jacobian products and its NTK, each checked against the others.
//!
//! For inputs $X$ (5 images) and parameters $\theta$ ($p$ entries), the Jacobian
//! $J = \partial f(X)/\partial\theta$ is used only through $Jv$ and $J^\top u$:
//! $\langle Jv, u\rangle = \langle v, J^\top u\rangle$, and the NTK $K = JJ^\top$ applied to $u$
//! is $J(J^\top u)$.
//!
//! Run with `cargo run -p ntk-ops --example cnn_products`.

use ntk_ops::layers::Conv2d;
use ntk_ops::{
    Activation, DefaultBackend, Jacobian, JacobianOperator, Layer, NetworkConfig, convert,
};

fn main() -> Result<(), ntk_ops::OpsError> {
    type B = DefaultBackend;
    let dev = Default::default();
    // 1×6×6 images → conv 3×3 (4 channels, padding 1) → ReLU → max-pool 2 → linear (1)
    let cnn = NetworkConfig::new(
        &[1, 6, 6],
        vec![
            Conv2d::new(1, 4, 3).with_padding([1, 1]).into(),
            Layer::act(Activation::Relu),
            Layer::max_pool2d([2, 2]),
            Layer::flatten(),
            Layer::linear(4 * 3 * 3, 1),
        ],
    )
    .init::<B>(0, &dev)?;
    let n = 5;
    let x = convert::tensor_from_f64((0..n * 36).map(|i| (i as f64).sin()).collect(), n, 36, &dev);
    let jac = Jacobian::new(cnn, x, Default::default())?;
    let p = jac.n_params();
    let v = convert::tensor_from_f64((0..p).map(|i| (i as f64).cos()).collect(), p, 1, &dev);
    let u = convert::tensor_from_f64(vec![1.0, -2.0, 0.5, 0.0, 3.0], n, 1, &dev);
    let (jv, jtu) = (jac.jvp(v.clone())?, jac.vjp(u.clone())?);
    let lhs = (jv * u.clone()).sum().into_scalar();
    let rhs = (v * jtu).sum().into_scalar();
    println!("p = {p} parameters, {n} images");
    println!("<J v, u> = {lhs:.15e}");
    println!(
        "<v, Jᵀu> = {rhs:.15e}  (relative difference {:.1e})",
        (lhs - rhs).abs() / lhs.abs()
    );
    let k = jac.ntk_matrix(&jac)?;
    let ku = jac.jvp(jac.vjp(u.clone())?)?;
    let gap = (k.clone().matmul(u) - ku).abs().max().into_scalar();
    println!("max |K u - J(Jᵀu)| = {gap:.1e}");
    let k = convert::to_dmatrix_f64(k);
    println!("NTK diagonal: {:.4?}", k.diagonal().as_slice());
    assert!((lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0) && gap < 1e-12);
    Ok(())
}
