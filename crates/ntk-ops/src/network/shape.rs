//! A point's shape inside a network.

/// A point's shape between layers: always `[c, h, w]`, a vector of $d$ as `[d, 1, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub dims: [usize; 3],
    /// `[c, h, w]` image (else a vector).
    pub image: bool,
}

impl Shape {
    /// A vector of `d` features.
    pub fn vector(d: usize) -> Self {
        Self {
            dims: [d, 1, 1],
            image: false,
        }
    }

    /// A `[c, h, w]` image.
    pub fn image(c: usize, h: usize, w: usize) -> Self {
        Self {
            dims: [c, h, w],
            image: true,
        }
    }

    /// Entries per point.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The shape as PyTorch states it (`[d]` or `[c, h, w]`).
    pub fn torch(&self) -> Vec<usize> {
        if self.image {
            self.dims.to_vec()
        } else {
            vec![self.dims[0]]
        }
    }

    /// The batch shape of `m` points, `[m, c, h, w]`.
    pub fn batch(&self, m: usize) -> [usize; 4] {
        [m, self.dims[0], self.dims[1], self.dims[2]]
    }
}
