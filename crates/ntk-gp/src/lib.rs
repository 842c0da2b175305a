//! Finite neural-tangent-kernel Gaussian processes.
//!
//! A network trained on a source task is linearized around its weights,
//! $f(x;\theta') \approx J(x)\theta' + \mu(x)$; with the prior $\theta' \sim \mathcal N(0, s^2 I)$
//! and Gaussian noise $\sigma^2$ each new task is a Gaussian process with kernel
//! $s^2 J J^\top$, adapted in closed form.
