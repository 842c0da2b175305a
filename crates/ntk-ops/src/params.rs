//! The flat parameter vector: names, shapes and offsets of each tensor.
//!
//! The order is PyTorch's `state_dict` order for an `nn.Sequential` of
//! `nn.Linear` layers and activations: per Linear layer, its weight
//! (shape `[out, in]`, row-major) and then its bias (`[out]`), layers in
//! order. Linear layer $l$ (0-based) has key prefix `2l` because the
//! activations take the odd indices (`0.weight`, `0.bias`, `2.weight`, …).

/// One named tensor inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// The `state_dict` key, e.g. `"2.weight"`.
    pub name: String,
    /// The tensor's shape, PyTorch convention (`[out, in]` for a weight).
    pub shape: Vec<usize>,
    /// Offset of the first entry in the flat vector.
    pub offset: usize,
}

impl ParamSpec {
    /// Number of entries; `usize::MAX` when the product overflows (a shape no file or
    /// memory can hold, which every comparison with a real file then refuses).
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX)
    }
}

/// The layout of a model's flat parameter vector $\theta \in \mathbb{R}^p$.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    specs: Vec<ParamSpec>,
    n_params: usize,
}

impl ParamLayout {
    /// A layout from `(name, shape)` pairs, packed in the given order.
    pub fn new(entries: impl IntoIterator<Item = (String, Vec<usize>)>) -> Self {
        let mut offset = 0;
        let specs = entries
            .into_iter()
            .map(|(name, shape)| {
                let spec = ParamSpec {
                    name,
                    shape,
                    offset,
                };
                offset = offset.saturating_add(spec.numel());
                spec
            })
            .collect();
        Self {
            specs,
            n_params: offset,
        }
    }

    /// The layout of an MLP with the given widths $h_0, \dots, h_L$, in
    /// `nn.Sequential` naming.
    pub fn sequential_linear(widths: &[usize]) -> Self {
        Self::new(widths.windows(2).enumerate().flat_map(|(l, w)| {
            [
                (format!("{}.weight", 2 * l), vec![w[1], w[0]]),
                (format!("{}.bias", 2 * l), vec![w[1]]),
            ]
        }))
    }

    /// Total number of parameters $p$ (`usize::MAX` when it overflows: see
    /// [`ParamSpec::numel`]).
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// The tensors, in flat order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The tensor named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_layout_matches_pytorch_order() {
        let l = ParamLayout::sequential_linear(&[5, 3, 1]);
        let names: Vec<_> = l.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
        assert_eq!(l.get("2.weight").unwrap().shape, vec![1, 3]);
        assert_eq!(l.get("2.weight").unwrap().offset, 18);
        assert_eq!(l.n_params(), 15 + 3 + 3 + 1);
    }

    #[test]
    fn overflowing_shapes_saturate_instead_of_panicking() {
        let l = ParamLayout::sequential_linear(&[2, usize::MAX, 1]);
        assert_eq!(l.get("0.weight").unwrap().numel(), usize::MAX);
        assert_eq!(l.n_params(), usize::MAX);
        assert_eq!(l.get("2.bias").unwrap().offset, usize::MAX);
    }

    #[test]
    fn fig4_mlp_has_803601_parameters() {
        assert_eq!(
            ParamLayout::sequential_linear(&[5, 200, 2000, 200, 1]).n_params(),
            803_601
        );
    }
}
