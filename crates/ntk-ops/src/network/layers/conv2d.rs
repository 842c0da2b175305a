//! `nn.Conv2d`: $y = W \star x + b$ with stride, zero padding, dilation and groups.
//!
//! Tangent $\dot y = W \star \dot x + \dot W \star x + \dot b$, the $k$ columns of $\dot W$
//! as one convolution with $k$ times the output channels; adjoint $\bar x$ by the
//! transposed convolution (written as a convolution), $\bar W$ as one batched matrix
//! product of $\bar y$ with the input patches (im2col), one batch entry per group.

use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved};
use crate::network::plan::{Compiler, Node, Site, Values, init_uniform, invalid};
use crate::network::shape::Shape;
use crate::network::tensor::pad_zeros;
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// `nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups)` with
/// zero padding: weight `[c_out, c_in / groups, k_h, k_w]`, bias `[c_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conv2d {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[k_h, k_w]`.
    pub kernel: [usize; 2],
    /// Stride `[s_h, s_w]`.
    pub stride: [usize; 2],
    /// Zero padding `[p_h, p_w]` on both sides, at most the dilated kernel's reach
    /// $d (k - 1)$.
    pub padding: [usize; 2],
    /// Dilation `[d_h, d_w]`.
    pub dilation: [usize; 2],
    /// Groups: both channel counts divisible by it.
    pub groups: usize,
}

impl Conv2d {
    /// `nn.Conv2d(c_in, c_out, k)`: square kernel, stride 1, no padding, no dilation, one group.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel: [kernel; 2],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// With kernel `[k_h, k_w]`.
    pub fn with_kernel(mut self, kernel: [usize; 2]) -> Self {
        self.kernel = kernel;
        self
    }

    /// With stride `[s_h, s_w]`.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }

    /// With zero padding `[p_h, p_w]`.
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }

    /// With dilation `[d_h, d_w]`.
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    /// With `groups` groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, self.dilation, self.groups)
    }

    /// Output size along axis `d` of an input of `size`, if positive.
    fn out_size(&self, size: usize, d: usize) -> Option<usize> {
        let reach = self.dilation[d] * (self.kernel[d].checked_sub(1)?);
        (size + 2 * self.padding[d])
            .checked_sub(reach + 1)
            .filter(|_| self.stride[d] > 0 && self.dilation[d] > 0)
            .map(|s| s / self.stride[d] + 1)
    }
}

impl LayerSpec for Conv2d {
    fn compile(&self, c: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        let (ci, co, g) = (self.in_channels, self.out_channels, self.groups);
        let [cin, h, w] = input.dims;
        if !input.image || cin != ci {
            return Err(invalid(format!(
                "{name}: Conv2d({ci}, {co}) on input of shape {:?}",
                input.torch()
            )));
        }
        if co == 0 || g == 0 || ci % g != 0 || co % g != 0 {
            return Err(invalid(format!(
                "{name}: Conv2d({ci}, {co}, groups = {g}): channels must be positive multiples \
                 of the groups"
            )));
        }
        let (Some(ho), Some(wo)) = (self.out_size(h, 0), self.out_size(w, 1)) else {
            return Err(invalid(format!(
                "{name}: kernel {:?} / stride {:?} / dilation {:?} do not fit input {:?}",
                self.kernel,
                self.stride,
                self.dilation,
                input.torch()
            )));
        };
        if (0..2).any(|d| self.padding[d] > self.dilation[d] * (self.kernel[d] - 1)) {
            return Err(invalid(format!(
                "{name}: padding {:?} must not exceed the dilated kernel's reach",
                self.padding
            )));
        }
        let param = c.affine(
            name,
            vec![co, ci / g, self.kernel[0], self.kernel[1]],
            vec![co],
        );
        Ok(Node::new(Op::Conv2d(*self), input, Shape::image(co, ho, wo)).with_param(param))
    }
}

impl LayerRule for Conv2d {
    fn forward<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let i = site.weight();
        conv2d(
            x,
            values.shaped::<4>(i),
            Some(values.params[i + 1].clone()),
            self.options(),
        )
    }

    fn forward_saving<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        (self.forward(site, values, x.clone()), Saved::Input(x))
    }

    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        v: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        let a = saved.input();
        let (k, m) = (cx.batch.k, cx.batch.m);
        let i = cx.site.weight();
        let g = self.groups;
        let [co, ho, wo] = cx.site.output.dims;
        let (cig, cog) = (self.in_channels / g, co / g);
        let [kh, kw] = self.kernel;
        // Ẇ of the k columns as k·c_out output channels, ordered (group, column, channel)
        // so that each group's block reads that group's input channels
        let wdot = v[i]
            .clone()
            .reshape([k, g, cog, cig * kh * kw])
            .swap_dims(0, 1)
            .reshape([k * co, cig, kh, kw]);
        let mut z = conv2d(a.clone(), wdot, None, self.options())
            .reshape([m, g, k, cog, ho * wo])
            .permute([2, 0, 1, 3, 4])
            .reshape([k, m, co, ho * wo])
            + v[i + 1].clone().reshape([k, 1, co, 1]);
        if let Some(t) = xdot {
            let w = cx.values.shaped::<4>(i);
            z = z + conv2d(t, w, None, self.options()).reshape([k, m, co, ho * wo]);
        }
        Some(z.reshape([k * m, co, ho, wo]))
    }

    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        ybar: Tensor<B, 4>,
        grads: &mut Grads<B>,
        need_input: bool,
    ) -> Option<Tensor<B, 4>> {
        let a = saved.input();
        let (k, m) = (cx.batch.k, cx.batch.m);
        let i = cx.site.weight();
        let g = self.groups;
        let [co, ho, wo] = cx.site.output.dims;
        let (cig, cog) = (self.in_channels / g, co / g);
        let kk = self.kernel[0] * self.kernel[1];
        let y5 = ybar.clone().reshape([k, m, co, ho * wo]);
        grads.add(i + 1, y5.clone().sum_dim(3).sum_dim(1).reshape([k, co]));
        // W̄ = ȳᵀ · patches(a), all columns in one product per group
        let yt = y5
            .reshape([k, m, g, cog, ho * wo])
            .permute([2, 0, 3, 1, 4])
            .reshape([g, k * cog, m * ho * wo]);
        let cols = self
            .patches(a.clone(), cx.site.output)
            .reshape([m * ho * wo, g, cig * kk])
            .swap_dims(0, 1);
        let gw = yt
            .matmul(cols)
            .reshape([g, k, cog * cig * kk])
            .swap_dims(0, 1)
            .reshape([k, co * cig * kk]);
        grads.add(i, gw);
        need_input.then(|| self.input_grad(ybar, cx.values.shaped::<4>(i), cx.site.input))
    }

    fn init(&self, site: &Site, layout: &ParamLayout, rng: &mut SplitMix64, theta: &mut Vec<f64>) {
        init_uniform(layout, site.weight(), rng, theta);
    }

    /// The adjoint's im2col patches, $c_{\text{in}} k_h k_w$ entries per output position,
    /// besides the input and output maps.
    fn widest(&self, site: &Site) -> usize {
        let [_, ho, wo] = site.output.dims;
        let patches = self.in_channels * self.kernel[0] * self.kernel[1] * ho * wo;
        patches.max(site.input.numel()).max(site.output.numel())
    }
}

impl Conv2d {
    /// im2col: the input patches the convolution reads, as `[m·h_o·w_o, c·k_h·k_w]` (row:
    /// point, then output position; column: the weight's `[c, k_h, k_w]` order, so that a
    /// group's channels are one contiguous block). burn-ndarray 0.21's
    /// `conv2d_weight_backward` is a convolution whose kernel is the whole output map,
    /// several times slower.
    fn patches<B: Backend>(&self, x: Tensor<B, 4>, out: Shape) -> Tensor<B, 2> {
        let [m, c, h, w] = x.dims();
        let [_, ho, wo] = out.dims;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [ph, pw] = self.padding;
        let [dh, dw] = self.dilation;
        // room for a full stride block after every window start d·i + s·o
        let (nh, nw) = (dh * (kh - 1) + ho * sh, dw * (kw - 1) + wo * sw);
        let xp = pad_zeros(x, (pw, nw - w - pw, ph, nh - h - ph));
        let mut cols = Vec::with_capacity(kh * kw);
        for i in 0..kh {
            for j in 0..kw {
                let p = xp
                    .clone()
                    .narrow(2, dh * i, ho * sh)
                    .narrow(3, dw * j, wo * sw);
                let p = if sh * sw > 1 {
                    p.reshape([m, c, ho, sh, wo, sw])
                        .narrow(3, 0, 1)
                        .narrow(5, 0, 1)
                        .reshape([m, c, ho * wo])
                } else {
                    p.reshape([m, c, ho * wo])
                };
                cols.push(p);
            }
        }
        Tensor::stack::<4>(cols, 2)
            .reshape([m, c * kh * kw, ho * wo])
            .swap_dims(1, 2)
            .reshape([m * ho * wo, c * kh * kw])
    }

    /// $\bar x$, the transposed convolution of $\bar y$ with $W$, written as a plain
    /// convolution: $\bar y$ dilated by the stride (zeros between entries), zero-padded by
    /// $d(k - 1) - p$ in front and up to the input size behind, correlated (same dilation
    /// and groups) with $W$ flipped in space and with its channel axes swapped within each
    /// group. burn-ndarray 0.21's own `conv_transpose2d` is 30–50× slower than its
    /// `conv2d` at LeNet sizes.
    fn input_grad<B: Backend>(
        &self,
        ybar: Tensor<B, 4>,
        w: Tensor<B, 4>,
        input: Shape,
    ) -> Tensor<B, 4> {
        let [kh, kw] = self.kernel;
        let [dh, dw] = self.dilation;
        let g = self.groups;
        let mut y = ybar;
        for (axis, s) in [(2, self.stride[0]), (3, self.stride[1])] {
            if s > 1 {
                y = dilate(y, axis, s);
            }
        }
        let [_, _, lh, lw] = y.dims();
        let [_, h, w_in] = input.dims;
        let (fh, fw) = (
            dh * (kh - 1) - self.padding[0],
            dw * (kw - 1) - self.padding[1],
        );
        let (bh, bw) = (h + dh * (kh - 1) - fh - lh, w_in + dw * (kw - 1) - fw - lw);
        let y = pad_zeros(y, (fw, bw, fh, bh));
        let [co, cig, _, _] = w.dims();
        let cog = co / g;
        let wt = w
            .flip([2, 3])
            .reshape([g, cog, cig, kh * kw])
            .swap_dims(1, 2)
            .reshape([g * cig, cog, kh, kw]);
        conv2d(
            y,
            wt,
            None,
            ConvOptions::new([1, 1], [0, 0], self.dilation, g),
        )
    }
}

/// Inserts $s - 1$ zeros between consecutive entries along `axis` (2 or 3).
fn dilate<B: Backend>(y: Tensor<B, 4>, axis: usize, s: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = y.dims();
    let (y5, len) = if axis == 2 {
        (y.reshape([b, c, h, 1, w]), h)
    } else {
        (y.reshape([b, c * h, w, 1, 1]), w)
    };
    let mut zdims = y5.dims();
    zdims[3] = s - 1;
    let z = crate::convert::zeros::<B, 5>(zdims, &y5.device());
    let spread = Tensor::cat(vec![y5, z], 3);
    let out = (len - 1) * s + 1;
    if axis == 2 {
        spread.reshape([b, c, h * s, w]).narrow(2, 0, out)
    } else {
        spread.reshape([b, c, h, w * s]).narrow(3, 0, out)
    }
}
