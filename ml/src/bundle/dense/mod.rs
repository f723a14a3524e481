//! [`DensePredictor`]: the bundle's model as plain `f32` matrices, for low-latency serving.
//!
//! [`Predictor`](super::Predictor) runs burn's `NdArray` backend, which costs about 10
//! microseconds per call in tensor bookkeeping whatever the batch size. Serving usually predicts
//! 1 to 64 rows at a time, so this module evaluates the same network with hand-written loops:
//!
//! ```text
//! weights [d_in, d_out] row-major  ──pack──►  panels of 8 output columns, [d_in][8] each
//! x rows ─► (4 rows at a time) acc[4][8] += x[r][i] * panel[i][..]  ─► activation ─► next layer
//! ```
//!
//! The 4 × 8 accumulator block stays in registers and its inner loop is a fixed-width multiply-add
//! the compiler vectorises; no `unsafe`, no per-call allocation once [`DenseScratch`] has grown.
//! Activations and softmax follow burn's formulas (GELU is the exact, erf-based one, with the
//! same `erf` as burn's `NdArray` backend), so outputs match the burn path to float rounding.

use std::fmt;

use super::model_bundle::ModelBundle;
use crate::error::{Error, Result};
use crate::model::{Activation, Task};

/// Output columns per weight panel (and per accumulator row).
const LANES: usize = 8;
/// Rows evaluated together, sharing each weight load.
const ROW_BLOCK: usize = 4;

/// The bundle's model as plain `f32` matrices: the same outputs as
/// [`Predictor::predict`](super::Predictor::predict) (within float rounding, 1e-5 relative), with
/// far less overhead per call.
///
/// `Send + Sync` (it holds only `Vec<f32>`s), so one instance can serve many threads; each thread
/// keeps its own [`DenseScratch`] for [`DensePredictor::predict_into`].
///
/// ```
/// # use millrace_ml::bundle::{DensePredictor, DenseScratch, ModelBundle};
/// # fn serve(bundle: &ModelBundle, x: &[f32], rows: usize) -> millrace_ml::Result<Vec<f32>> {
/// let model = DensePredictor::new(bundle)?;
/// let mut scratch = DenseScratch::default();
/// let mut out = Vec::new();
/// model.predict_into(x, rows, &mut scratch, &mut out)?; // rows * model.output_dim() values
/// # Ok(out) }
/// ```
#[derive(Clone)]
pub struct DensePredictor {
    layers: Vec<Layer>,
    activation: Activation,
    task: Task,
    input_dim: usize,
    output_dim: usize,
}

/// Reusable buffers for [`DensePredictor::predict_into`]: intermediate activations and a small
/// transposed input block. Grows to the largest batch seen, then stops allocating.
#[derive(Default, Debug, Clone)]
pub struct DenseScratch {
    /// Outputs of even-numbered layers.
    even: Vec<f32>,
    /// Outputs of odd-numbered layers.
    odd: Vec<f32>,
    /// `ROW_BLOCK` input rows, transposed to `[d_in][ROW_BLOCK]`.
    block: Vec<f32>,
}

/// One linear layer, packed for the kernel.
#[derive(Clone)]
struct Layer {
    /// Inputs per row.
    d_in: usize,
    /// Outputs per row, rounded up to a multiple of [`LANES`]; the padding columns have zero
    /// weights and bias, so they hold `activation(0)` and are never read by the next layer.
    width: usize,
    /// `width / LANES` panels, each `d_in` rows of `LANES` weights (panel `p`, input `i` at
    /// index `p * d_in + i`).
    weights: Vec<[f32; LANES]>,
    /// The bias, one `LANES`-wide piece per panel.
    bias: Vec<[f32; LANES]>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DensePredictor>();
};

impl DensePredictor {
    /// Unpacks the bundle's flat weights (the order documented on [`Mlp`](crate::model::Mlp):
    /// per layer, `[d_in, d_out]` row-major then the bias) into packed matrices.
    pub fn new(bundle: &ModelBundle) -> Result<Self> {
        bundle.validate()?;
        let input_dim = bundle.input_dim();
        let spec = bundle.builtin_spec()?;
        let dims = spec.layer_dims(input_dim, &bundle.task);
        let mut rest = bundle.weights.as_slice();
        let mut layers = Vec::with_capacity(dims.len().saturating_sub(1));
        for pair in dims.windows(2) {
            let (d_in, d_out) = (pair[0], pair[1]);
            // `validate` checked the total, so these splits are in range.
            let (w, tail) = rest.split_at((d_in * d_out).min(rest.len()));
            let (b, tail) = tail.split_at(d_out.min(tail.len()));
            rest = tail;
            layers.push(Layer::pack(d_in, d_out, w, b));
        }
        Ok(Self {
            layers,
            activation: spec.activation,
            task: bundle.task,
            input_dim,
            output_dim: bundle.task.output_dim(),
        })
    }

    /// Number of input features per row.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Values per row of output: `num_classes` for classification (softmax probabilities), 1 for
    /// regression.
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// What the model predicts.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Predictions for `rows` rows of features (`x` row-major, `rows * input_dim` values):
    /// `rows * output_dim` values. Errors ([`Error::Input`]) when `x` has the wrong length.
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.predict_into(x, rows, &mut DenseScratch::default(), &mut out)?;
        Ok(out)
    }

    /// Like [`DensePredictor::predict`], writing into `out` (cleared and resized) and reusing
    /// `scratch`: no allocation once the buffers have grown to the batch size.
    pub fn predict_into(
        &self,
        x: &[f32],
        rows: usize,
        scratch: &mut DenseScratch,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if rows.checked_mul(self.input_dim) != Some(x.len()) {
            return Err(Error::Input(format!(
                "feature buffer has {} values, expected {rows} rows x {} features",
                x.len(),
                self.input_dim
            )));
        }
        out.clear();
        if rows == 0 {
            return Ok(());
        }
        let DenseScratch { even, odd, block } = scratch;
        let last = self.layers.len().saturating_sub(1);
        let mut stride = self.input_dim;
        for (k, layer) in self.layers.iter().enumerate() {
            let (src, dst): (&[f32], &mut Vec<f32>) = match k {
                0 => (x, &mut *even),
                _ if k % 2 == 1 => (even.as_slice(), &mut *odd),
                _ => (odd.as_slice(), &mut *even),
            };
            layer.forward(src, stride, rows, block, dst);
            if k < last {
                activate(self.activation, dst);
            }
            stride = layer.width;
        }
        let logits = match self.layers.len() {
            0 => x,
            n if n % 2 == 1 => even.as_slice(),
            _ => odd.as_slice(),
        };
        out.reserve(rows * self.output_dim);
        for row in logits.chunks(stride.max(1)).take(rows) {
            let row = &row[..self.output_dim];
            match self.task {
                Task::Classification { .. } => softmax_into(row, out),
                Task::Regression => out.extend_from_slice(row),
            }
        }
        Ok(())
    }
}

impl fmt::Debug for DensePredictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut dims = vec![self.input_dim];
        dims.extend(self.layers.iter().skip(1).map(|l| l.d_in));
        dims.push(self.output_dim);
        f.debug_struct("DensePredictor")
            .field("task", &self.task)
            .field("layer_dims", &dims)
            .field("activation", &self.activation)
            .finish()
    }
}

impl Layer {
    /// Packs a `[d_in, d_out]` row-major weight matrix `w` and bias `b` into panels.
    fn pack(d_in: usize, d_out: usize, w: &[f32], b: &[f32]) -> Self {
        let panels = d_out.div_ceil(LANES);
        let mut weights = vec![[0.0; LANES]; panels * d_in];
        let mut bias = vec![[0.0; LANES]; panels];
        for (i, w_row) in w.chunks_exact(d_out.max(1)).take(d_in).enumerate() {
            for (j, &v) in w_row.iter().enumerate() {
                weights[(j / LANES) * d_in + i][j % LANES] = v;
            }
        }
        for (j, &v) in b.iter().enumerate() {
            bias[j / LANES][j % LANES] = v;
        }
        Self {
            d_in,
            width: panels * LANES,
            weights,
            bias,
        }
    }

    /// `dst = src · W + b` for `rows` rows of `src` (row `r` at `src[r * src_stride..]`, its
    /// first `d_in` values used); `dst` becomes `rows × width`.
    fn forward(
        &self,
        src: &[f32],
        src_stride: usize,
        rows: usize,
        block: &mut Vec<f32>,
        dst: &mut Vec<f32>,
    ) {
        dst.clear();
        dst.resize(rows * self.width, 0.0);
        let mut r = 0;
        while r + ROW_BLOCK <= rows {
            self.rows::<ROW_BLOCK>(
                &src[r * src_stride..],
                src_stride,
                block,
                &mut dst[r * self.width..],
            );
            r += ROW_BLOCK;
        }
        while r < rows {
            self.rows::<1>(
                &src[r * src_stride..],
                src_stride,
                block,
                &mut dst[r * self.width..],
            );
            r += 1;
        }
    }

    /// The kernel: `R` rows of output, `LANES` columns at a time, accumulating in registers.
    #[inline(always)]
    fn rows<const R: usize>(
        &self,
        src: &[f32],
        src_stride: usize,
        block: &mut Vec<f32>,
        dst: &mut [f32],
    ) {
        let d_in = self.d_in;
        // Inputs as `[d_in][R]`, so each weight row is used by all R rows from one load.
        let xt: &[[f32; R]] = if R == 1 {
            src[..d_in].as_chunks::<R>().0
        } else {
            block.clear();
            block.resize(d_in * R, 0.0);
            for r in 0..R {
                let row = &src[r * src_stride..r * src_stride + d_in];
                for (i, &v) in row.iter().enumerate() {
                    block[i * R + r] = v;
                }
            }
            block.as_chunks::<R>().0
        };
        for (p, bias) in self.bias.iter().enumerate() {
            let panel = &self.weights[p * d_in..(p + 1) * d_in];
            let mut acc = [*bias; R];
            for (w, xv) in panel.iter().zip(xt) {
                for r in 0..R {
                    for c in 0..LANES {
                        acc[r][c] += xv[r] * w[c];
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let at = r * self.width + p * LANES;
                dst[at..at + LANES].copy_from_slice(a);
            }
        }
    }
}

/// Applies `activation` in place, with burn's formulas.
pub(crate) fn activate(activation: Activation, values: &mut [f32]) {
    match activation {
        Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Tanh => values.iter_mut().for_each(|v| *v = v.tanh()),
        // burn: x * (1 + erf(x / sqrt 2)) / 2, erf evaluated in f64.
        Activation::Gelu => values.iter_mut().for_each(|v| {
            let e = erf(f64::from(*v / std::f32::consts::SQRT_2)) as f32;
            *v = *v * (e + 1.0) / 2.0;
        }),
        Activation::Sigmoid => values
            .iter_mut()
            .for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
    }
}

/// Appends the softmax of `logits` to `out` (burn's order: subtract the max, exp, divide by sum).
pub(crate) fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let start = out.len();
    out.extend(logits.iter().map(|&v| (v - max).exp()));
    let sum: f32 = out[start..].iter().sum();
    out[start..].iter_mut().for_each(|v| *v /= sum);
}

/// The error function, a port of FreeBSD's `s_erf.c` as found in the `libm` crate, which burn's
/// `NdArray` backend uses for GELU; so GELU here gives the same values.
///
/// Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
/// Developed at SunPro, a Sun Microsystems, Inc. business. Permission to use, copy, modify, and
/// distribute this software is freely granted, provided that this notice is preserved.
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
fn erf(x: f64) -> f64 {
    const ERX: f64 = 8.45062911510467529297e-01;
    const EFX8: f64 = 1.02703333676410069053e+00;
    // erf on [0, 0.84375]
    const PP: [f64; 5] = [
        1.28379167095512558561e-01,
        -3.25042107247001499370e-01,
        -2.84817495755985104766e-02,
        -5.77027029648944159157e-03,
        -2.37630166566501626084e-05,
    ];
    const QQ: [f64; 5] = [
        3.97917223959155352819e-01,
        6.50222499887672944485e-02,
        5.08130628187576562776e-03,
        1.32494738004321644526e-04,
        -3.96022827877536812320e-06,
    ];
    // erf on [0.84375, 1.25]
    const PA: [f64; 7] = [
        -2.36211856075265944077e-03,
        4.14856118683748331666e-01,
        -3.72207876035701323847e-01,
        3.18346619901161753674e-01,
        -1.10894694282396677476e-01,
        3.54783043256182359371e-02,
        -2.16637559486879084300e-03,
    ];
    const QA: [f64; 6] = [
        1.06420880400844228286e-01,
        5.40397917702171048937e-01,
        7.18286544141962662868e-02,
        1.26171219808761642112e-01,
        1.36370839120290507362e-02,
        1.19844998467991074170e-02,
    ];
    // erfc on [1.25, 1/0.35]
    const RA: [f64; 8] = [
        -9.86494403484714822705e-03,
        -6.93858572707181764372e-01,
        -1.05586262253232909814e+01,
        -6.23753324503260060396e+01,
        -1.62396669462573470355e+02,
        -1.84605092906711035994e+02,
        -8.12874355063065934246e+01,
        -9.81432934416914548592e+00,
    ];
    const SA: [f64; 8] = [
        1.96512716674392571292e+01,
        1.37657754143519042600e+02,
        4.34565877475229228821e+02,
        6.45387271733267880336e+02,
        4.29008140027567833386e+02,
        1.08635005541779435134e+02,
        6.57024977031928170135e+00,
        -6.04244152148580987438e-02,
    ];
    // erfc on [1/0.35, 28]
    const RB: [f64; 7] = [
        -9.86494292470009928597e-03,
        -7.99283237680523006574e-01,
        -1.77579549177547519889e+01,
        -1.60636384855821916062e+02,
        -6.37566443368389627722e+02,
        -1.02509513161107724954e+03,
        -4.83519191608651397019e+02,
    ];
    const SB: [f64; 7] = [
        3.03380607434824582924e+01,
        3.25792512996573918826e+02,
        1.53672958608443695994e+03,
        3.19985821950859553908e+03,
        2.55305040643316442583e+03,
        4.74528541206955367215e+02,
        -2.24409524465858183362e+01,
    ];
    /// `c[0] + z * (c[1] + z * (...))`.
    fn poly(c: &[f64], z: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * z + k)
    }

    let high = (x.to_bits() >> 32) as u32;
    let negative = high >> 31 != 0;
    let ix = high & 0x7fff_ffff;
    if ix >= 0x7ff0_0000 {
        // erf(nan) = nan, erf(±inf) = ±1
        return 1.0 - 2.0 * f64::from(u8::from(negative)) + 1.0 / x;
    }
    if ix < 0x3feb_0000 {
        // |x| < 0.84375
        if ix < 0x3e30_0000 {
            // |x| < 2^-28
            return 0.125 * (8.0 * x + EFX8 * x);
        }
        let z = x * x;
        let r = poly(&PP, z);
        let s = 1.0 + z * poly(&QQ, z);
        return x + x * (r / s);
    }
    let y = if ix < 0x3ff4_0000 {
        // 0.84375 <= |x| < 1.25
        let s = x.abs() - 1.0;
        let p = poly(&PA, s);
        let q = 1.0 + s * poly(&QA, s);
        1.0 - (1.0 - ERX - p / q)
    } else if ix < 0x4018_0000 {
        // 1.25 <= |x| < 6
        let ax = x.abs();
        let s = 1.0 / (ax * ax);
        let (r, big_s) = if ix < 0x4006_db6d {
            (poly(&RA, s), 1.0 + s * poly(&SA, s))
        } else {
            (poly(&RB, s), 1.0 + s * poly(&SB, s))
        };
        let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
        1.0 - (-z * z - 0.5625).exp() * ((z - ax) * (z + ax) + r / big_s).exp() / ax
    } else {
        1.0 - f64::from_bits(0x0010_0000_0000_0000)
    };
    if negative { -y } else { y }
}

#[cfg(test)]
mod tests;
