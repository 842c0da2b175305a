#!/usr/bin/env python3
"""The PyTorch round-trip fixture of `ntk adapt` (crates/ntk-cli/tests/fixtures/).

Run by hand, from the repository root, with the anchors' venv (torch, numpy, safetensors):

    target/anchors-venv/bin/python scripts/make_cli_fixture.py

It builds two small PyTorch `nn.Sequential` networks, saves their weights exactly as a user
would (`safetensors.torch.save_file(model.state_dict(), path)`), writes train/test CSVs, and
computes the expected output of `ntk adapt` in float64 with numpy from an explicit Jacobian
written out by hand (chain rule through the layers, no autodiff). The hand Jacobian is checked
against `torch.func.jacrev` in float64 before anything is written.

The model: y = mu(x) + J(x) theta' + eps, theta' ~ N(0, s2 I), eps ~ N(0, noise),
with J the Jacobian of the network output with respect to all parameters at the saved weights.
With K = s2 J Jᵀ, A = K + noise I, r = y - mu(X) - c:

    mean(x*) = mu(x*) + c + s2 J* Jᵀ A⁻¹ r
    var(x*)  = s2 |J*|² - s2² J* Jᵀ A⁻¹ J J*ᵀ
    lower/upper = mean ∓ 1.959964 √(var + noise)
    lml = -½ rᵀA⁻¹r - ½ log|A| - n/2 log 2π

`constant` mean: c maximizes the lml, c = 1ᵀA⁻¹(y - 0) / 1ᵀA⁻¹1 (generalized least squares).

Outputs (a few KB): tanh.safetensors (float32, as PyTorch saves by default), relu.safetensors
(float64), train.csv, test.csv (with the target, so metrics are checked too) and expected.json.
"""

import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "ntk-cli", "tests", "fixtures")
Z95 = 1.959964
NOISE = 0.05
PRIOR_SCALE = 0.5
N_TRAIN, N_TEST = 80, 20


def data(rng, n):
    x = rng.uniform(-2.0, 2.0, size=(n, 2))
    y = np.sin(x[:, 0]) + 0.5 * np.cos(2.0 * x[:, 1]) + 0.1 * rng.standard_normal(n)
    return x, y


def write_csv(path, x, y):
    with open(path, "w") as f:
        f.write("x1,x2,y\n")
        for xi, yi in zip(x, y):
            f.write(f"{xi[0]!r},{xi[1]!r},{yi!r}\n")


ACT = {
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2, torch.nn.Tanh),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0.0).astype(np.float64), torch.nn.ReLU),
}


def layers_of(state):
    """[(W [out, in], b [out])] in float64, in Sequential order."""
    keys = sorted({int(k.split(".")[0]) for k in state})
    return [(state[f"{i}.weight"].double().numpy(), state[f"{i}.bias"].double().numpy()) for i in keys]


def forward_and_jacobian(layers, act, x):
    """Network output f(x) (n,) and the Jacobian df/dθ (n, P), by hand in float64.

    Columns are grouped per layer as (W row-major, b); the order does not matter for J Jᵀ.
    """
    phi, dphi, _ = ACT[act]
    n = x.shape[0]
    h = [x]  # inputs of each layer
    z = []  # pre-activations
    for i, (w, b) in enumerate(layers):
        zi = h[-1] @ w.T + b
        z.append(zi)
        if i + 1 < len(layers):
            h.append(phi(zi))
    f = z[-1][:, 0]
    # Backward: delta = df/dz_l, (n, width_l).
    blocks = [None] * len(layers)
    delta = np.ones((n, 1))
    for i in reversed(range(len(layers))):
        w, _ = layers[i]
        dw = delta[:, :, None] * h[i][:, None, :]  # (n, out, in)
        blocks[i] = np.concatenate([dw.reshape(n, -1), delta], axis=1)
        if i > 0:
            delta = (delta @ w) * dphi(z[i - 1])
    return f, np.concatenate(blocks, axis=1)


def check_against_torch(model, x, f, jac):
    m64 = model.double()
    params = {k: v.detach() for k, v in m64.named_parameters()}
    xt = torch.tensor(x)

    def out(p):
        return torch.func.functional_call(m64, p, (xt,))[:, 0]

    jt = torch.func.jacrev(out)(params)
    # Same grouping as the hand Jacobian: per layer, weight (row-major) then bias.
    cols = []
    for k in params:
        cols.append(jt[k].reshape(x.shape[0], -1).numpy())
    jt = np.concatenate(cols, axis=1)
    ft = out(params).detach().numpy()
    assert np.allclose(ft, f, rtol=1e-12, atol=1e-12), np.abs(ft - f).max()
    assert np.allclose(jt, jac, rtol=1e-12, atol=1e-12), np.abs(jt - jac).max()


def posterior(j_tr, j_te, y, mu_tr, mu_te, mean_mode):
    n = len(y)
    k = PRIOR_SCALE * j_tr @ j_tr.T
    a = k + NOISE * np.eye(n)
    chol = np.linalg.cholesky(a)

    def solve(b):
        return np.linalg.solve(chol.T, np.linalg.solve(chol, b))

    if mean_mode == "zero":
        prior_tr, prior_te, c = np.zeros(n), np.zeros(len(j_te)), None
    elif mean_mode == "network":
        prior_tr, prior_te, c = mu_tr, mu_te, None
    else:
        ones = np.ones(n)
        c = float(ones @ solve(y) / (ones @ solve(ones)))
        prior_tr, prior_te = np.full(n, c), np.full(len(j_te), c)
    r = y - prior_tr
    alpha = solve(r)
    k_star = PRIOR_SCALE * j_te @ j_tr.T
    mean = prior_te + k_star @ alpha
    var = PRIOR_SCALE * np.sum(j_te * j_te, axis=1) - np.sum(k_star * solve(k_star.T).T, axis=1)
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    lml = -0.5 * r @ alpha - 0.5 * logdet - 0.5 * n * np.log(2.0 * np.pi)
    half = Z95 * np.sqrt(var + NOISE)
    return {
        "mean_mode": mean_mode,
        "constant_mean": c,
        "log_marginal_likelihood": float(lml),
        "mean": mean.tolist(),
        "var": var.tolist(),
        "std": np.sqrt(var).tolist(),
        "lower": (mean - half).tolist(),
        "upper": (mean + half).tolist(),
    }


def metrics(y, mean, var):
    mean, var = np.array(mean), np.array(var) + NOISE
    r = y - mean
    return {
        "rmse": float(np.sqrt(np.mean(r * r))),
        "nlpd": float(np.mean(0.5 * (r * r / var + np.log(var) + np.log(2.0 * np.pi)))),
        "coverage95": float(np.mean(np.abs(r) <= Z95 * np.sqrt(var))),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(11)
    x_tr, y_tr = data(rng, N_TRAIN)
    x_te, y_te = data(rng, N_TEST)
    write_csv(os.path.join(OUT, "train.csv"), x_tr, y_tr)
    write_csv(os.path.join(OUT, "test.csv"), x_te, y_te)

    torch.manual_seed(11)
    nets = [
        # name, activation, widths, dtype on disk, mean modes
        ("tanh", "tanh", [2, 16, 16, 1], torch.float32, ["zero", "network", "constant"]),
        ("relu", "relu", [2, 32, 1], torch.float64, ["zero", "network"]),
    ]
    cases = []
    for name, act, widths, dtype, modes in nets:
        mods = []
        for i in range(len(widths) - 1):
            mods.append(torch.nn.Linear(widths[i], widths[i + 1]))
            if i + 2 < len(widths):
                mods.append(ACT[act][2]())
        model = torch.nn.Sequential(*mods).to(dtype)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(OUT, f"{name}.safetensors"))
        layers = layers_of(state)
        f_tr, j_tr = forward_and_jacobian(layers, act, x_tr)
        f_te, j_te = forward_and_jacobian(layers, act, x_te)
        check_against_torch(model, x_tr, f_tr, j_tr)
        check_against_torch(model, x_te, f_te, j_te)
        arch = "-".join(map(str, widths)) + ":" + act
        for mode in modes:
            case = posterior(j_tr, j_te, y_tr, f_tr, f_te, mode)
            case.update(
                model=f"{name}.safetensors",
                arch=arch,
                n_params=int(j_tr.shape[1]),
                metrics=metrics(y_te, case["mean"], case["var"]),
            )
            cases.append(case)
    expected = {
        "made_by": "scripts/make_cli_fixture.py",
        "noise": NOISE,
        "prior_scale": PRIOR_SCALE,
        "n_train": N_TRAIN,
        "n_test": N_TEST,
        "cases": cases,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for c in cases:
        print(f"{c['arch']:>14} {c['mean_mode']:>8}: lml {c['log_marginal_likelihood']:.6f}")


if __name__ == "__main__":
    main()
