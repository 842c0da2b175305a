#!/usr/bin/env python3
"""Plot `ntk adapt` on the CNN fixture (tests/fixtures/pytorch/cnn.*) against the blob centre u.

Run by hand, from the repository root, with the anchors' venv (numpy, matplotlib):

    target/anchors-venv/bin/python scripts/plot_cnn_example.py PRED.csv [docs/src/images/cnn-adapt.png]

PRED.csv is the output of `ntk adapt` on cnn.test.csv: the 64 input columns, then
mean,var,std,lower,upper, in the test rows' order. The images are Gaussian blobs
I(r, c) ∝ exp(−((r − v)² + (c − u)²) / 2w²), so the column profile P(c) = Σ_r I(r, c) is
∝ exp(−(c − u)² / 2w²) and log P(c) is a parabola in c with its vertex at u: u is recovered by a
weighted quadratic fit of log P over the columns that hold a visible part of the blob (this also
works at the image border, where an intensity centroid would be pulled inwards).

The test points lie on the line v = 3.5, u = 0 … 7; the training centres have u ∈ [0, 3.5]
(shaded), so the right half of the plot is extrapolation in u.
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIXTURES = "tests/fixtures/pytorch"
TRAIN_U = (0.0, 3.5)
SIDE = 8


def read_csv(path):
    """(header, values) of a numeric CSV with one header line."""
    with open(path) as f:
        header = f.readline().strip().split(",")
    values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return header, values


def blob_centre_u(pixels):
    """The column coordinate u of the blob in a flattened 1×8×8 image."""
    profile = pixels.reshape(SIDE, SIDE).sum(axis=0)
    cols = np.arange(SIDE, dtype=np.float64)
    keep = profile > 1e-2 * profile.max()
    a, b, _ = np.polyfit(cols[keep], np.log(profile[keep]), 2, w=np.sqrt(profile[keep]))
    return -b / (2.0 * a)


def load(pred_path):
    _, train = read_csv(f"{FIXTURES}/cnn.train.csv")
    _, test = read_csv(f"{FIXTURES}/cnn.test.csv")
    header, pred = read_csv(pred_path)
    n_in = SIDE * SIDE
    cols = {name: pred[:, i] for i, name in enumerate(header)}
    missing = [c for c in ("mean", "lower", "upper") if c not in cols]
    if missing:
        sys.exit(f"{pred_path}: no column {', '.join(missing)} (got {', '.join(header[n_in:])})")
    if pred.shape[0] != test.shape[0] or not np.allclose(pred[:, :n_in], test[:, :n_in]):
        sys.exit(f"{pred_path}: the rows are not the inputs of cnn.test.csv, in order")
    u_test = np.array([blob_centre_u(row[:n_in]) for row in test])
    u_train = np.array([blob_centre_u(row[:n_in]) for row in train])
    order = np.argsort(u_test)
    return u_train, u_test[order], test[order, n_in], {k: cols[k][order] for k in ("mean", "lower", "upper")}


def plot(u_train, u, y, pred, out):
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.axvspan(*TRAIN_U, color="0.92", zorder=0, label="training range of u")
    ax.plot(u_train, np.full_like(u_train, 0.0), "|", color="0.45", ms=10,
            transform=ax.get_xaxis_transform(), label="training centres (u)")
    ax.fill_between(u, pred["lower"], pred["upper"], color="tab:blue", alpha=0.2,
                    label="95% predictive band")
    ax.plot(u, pred["mean"], color="tab:blue", lw=2, label="predicted mean")
    ax.plot(u, y, "o", color="black", ms=3.5, label="true target (test)")
    ax.set_xlabel("blob centre u (column), on the test line v = 3.5")
    ax.set_ylabel("y")
    ax.set_xlim(u.min() - 0.2, u.max() + 0.2)
    ax.set_title("ntk adapt: a CNN trained on y = sin(u/2) + cos(v/2), new task sin(u/2 + 0.6) + ½cos(v/2)",
                 fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=150, bbox_inches="tight")
    print(f"wrote {out}")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[2] if len(sys.argv) == 3 else "docs/src/images/cnn-adapt.png"
    plot(*load(sys.argv[1]), out)


if __name__ == "__main__":
    main()
