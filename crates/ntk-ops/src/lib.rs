//! Jacobian, neural-tangent-kernel (NTK) and Fisher operators on burn backends.
//!
//! For a model $f(x;\theta)$ and inputs $X$, the Jacobian $J = \partial f(X)/\partial\theta$
//! ($n o \times p$) is used only through products $Jv$ (forward mode) and $J^\top u$
//! (reverse mode), from which the NTK $K = J J^\top$ and the Fisher / Gauss–Newton
//! matrix $J^\top H J$ are built as [`krylov::LinearOperator`]s.
