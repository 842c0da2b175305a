#!/usr/bin/env python3
"""PyTorch model fixtures for `ntk adapt` (tests/fixtures/pytorch/).

Run by hand, from the repository root, with the anchors' venv (torch, numpy, safetensors, onnx,
onnxscript, onnxruntime):

    target/anchors-venv/bin/python scripts/make_pytorch_fixtures.py

Each network is trained briefly in float32 on a source task, put in eval() mode and exported as
a user would: ONNX (TorchScript exporter, opset 17; for the CNN also the dynamo exporter, saved
with `external_data=True`: tensors over 256 bytes, here the 16×64 weight, go to `.onnx.data`, the
small ones stay inline) and/or `safetensors.torch.save_file(model.state_dict())`.
Train/test CSVs of a *new* task are written next to them (header `x0,...,x{d-1},y`, inputs
flattened row-major, an image 1×8×8 in C,H,W order; values rounded before use and written with
repr(), so the text parses to exactly the float64 used below).

Networks: `cnn` (1×8×8 Gaussian blob image → Conv/ReLU/MaxPool/Linear/Tanh/Linear), `resmlp`
(a residual block, Sequential keys 2.body.*), `named` (a custom module with fc1/fc2/fc3 and an
eval-mode Dropout), `gapped` (Sequential with Dropouts: keys 0.*, 3.*, 6.*), `gelu` (exact GELU:
the erf pattern at opset 17, a Gelu node at opset 20), `classifier` (3-class softmax), and
`refused-*.onnx`: graphs with an operator that is not read (LeakyRelu, Softmax, tanh-GELU).

The references are computed in float64, independently of the Rust code: the exported float32
weights are loaded into a float64 copy of the module, and J is the Jacobian of the outputs with
respect to ALL parameters (named_parameters() order, each flattened row-major, concatenated),
from torch.func (functional_call + jacrev), checked against central finite differences.

Regression (s² = PRIOR_SCALE, σ² = NOISE, prior mean μ(x) = the network output):

    K = s² J Jᵀ,  A = K + σ² I,  r = y − μ(X)
    mean(x*) = μ(x*) + s² J* Jᵀ A⁻¹ r
    var(x*)  = s² |J*|² − s⁴ J* Jᵀ A⁻¹ J J*ᵀ          (latent, without the noise)
    lml      = −½ rᵀA⁻¹r − ½ log|A| − n/2 log 2π

Classifier (Laplace approximation of the linearized softmax model, s² = CLASS_PRIOR_SCALE):
logits of n points and C classes stacked point-major, f ∈ R^{nC} (entry i*C + c), prior
f ~ N(μ, K) with K = s² J Jᵀ (cross-class terms included), p(y_i | f_i) = softmax(f_i)[y_i].
Newton from f = μ, a = 0, with W = blockdiag(diag π_i − π_i π_iᵀ), g = onehot(y) − π,
W½ the symmetric square root of each C×C block (eigenvalues clamped at 0):

    b = W (f − μ) + g,  B = I + W½ K W½ = L Lᵀ,  a = b − W½ B⁻¹ W½ K b,  f = μ + K a
    Ψ = Σ log p(y|f) − ½ aᵀ(f − μ)        until |ΔΨ| < 1e-12
    lml = Ψ − ½ log|B|                     (B, W at the mode)

Predictive at test points: mean logits μ* + K*ᵀ g, covariance of point i K**_ii − V_iᵀ V_i with
V = L⁻¹ W½ K*; probabilities by the probit approximation softmax(m_c / √(1 + π/8 Σ_cc)).
Metrics: accuracy, nll = mean −log proba[y], ece over the max probability with 10 equal-width
bins (k/10, (k+1)/10], ECE = Σ_b |B_b|/m · |acc_b − conf_b|.
"""

import copy
import json
import math
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import load_file, save_file
from torch import nn

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "pytorch")
NOISE = 0.05
PRIOR_SCALE = 0.5
CLASS_PRIOR_SCALE = 1.0
DECIMALS = 4
BLOB_WIDTH = 1.2
CLASS_CENTRES = np.array([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.5]])
CLASS_STD = 0.6
CLASS_SHIFT = np.array([0.5, -0.5])


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def rounded(x):
    return np.round(np.asarray(x, dtype=np.float64), DECIMALS)


def blob_images(u, v):
    """Images (n, 1, 8, 8): exp(−((r − v)² + (c − u)²) / (2 w²)), c the column, r the row."""
    r = np.arange(8.0)[None, :, None]
    c = np.arange(8.0)[None, None, :]
    img = np.exp(-((r - v[:, None, None]) ** 2 + (c - u[:, None, None]) ** 2) / (2 * BLOB_WIDTH**2))
    return rounded(img[:, None, :, :])


def cnn_source(rng, n=512):
    u, v = rng.uniform(0, 7, n), rng.uniform(0, 7, n)
    return blob_images(u, v), np.sin(u / 2) + np.cos(v / 2)


def cnn_new(rng, u, v):
    u, v = rounded(u), rounded(v)
    y = np.sin(u / 2 + 0.6) + 0.5 * np.cos(v / 2) + 0.05 * rng.standard_normal(len(u))
    return blob_images(u, v), rounded(y)


def mlp_source(rng, n=256):
    x = rng.uniform(-2, 2, (n, 2))
    return x, np.sin(x[:, 0]) + 0.5 * np.cos(2 * x[:, 1])


def mlp_new(rng, n):
    x = rounded(rng.uniform(-2, 2, (n, 2)))
    y = np.sin(x[:, 0] + 0.4) + 0.3 * x[:, 1] + 0.05 * rng.standard_normal(n)
    return x, rounded(y)


def blobs(rng, per_class, centres):
    """Points (3·per_class, 2) around the class centres, and their labels (class-major)."""
    x = np.concatenate([c + CLASS_STD * rng.standard_normal((per_class, 2)) for c in centres])
    y = np.repeat(np.arange(len(centres)), per_class)
    return x, y


def write_csv(path, x, y):
    x = x.reshape(len(x), -1)
    with open(path, "w") as f:
        f.write(",".join([f"x{i}" for i in range(x.shape[1])] + ["y"]) + "\n")
        for xi, yi in zip(x, y):
            target = str(int(yi)) if isinstance(yi, (int, np.integer)) else repr(float(yi))
            f.write(",".join([repr(float(v)) for v in xi] + [target]) + "\n")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))

    def forward(self, x):
        return x + self.body(x)


class Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 16)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 1)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(self.drop(torch.tanh(self.fc1(x))))))


def make_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 1),
    )


def make_resmlp():
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), Residual(16), nn.Tanh(), nn.Linear(16, 1))


def make_gapped():
    return nn.Sequential(
        nn.Linear(2, 16), nn.Tanh(), nn.Dropout(0.1),
        nn.Linear(16, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1),
    )


class FlattenByView(nn.Module):
    """`x.view(x.size(0), -1)`: exported as Shape, Gather, Unsqueeze, Concat and Reshape."""

    def forward(self, x):
        return x.view(x.size(0), -1)


def make_cnn_ops():
    """The other layer kinds: BatchNorm2d (after the activation, so that the exporter does not
    fold it into the convolution), Sigmoid, AvgPool2d, a strided convolution, ELU, a Reshape
    flatten, Softplus."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Sigmoid(), nn.BatchNorm2d(3), nn.AvgPool2d(2),
        nn.Conv2d(3, 4, 3, stride=1), nn.ELU(), FlattenByView(),
        nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 1),
    )


class MatMulMlp(nn.Module):
    """`x @ W + b` with bare parameters: exported as MatMul + Add, weights stored [in, out]."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(2, 12) / 2 ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(12))
        self.w2 = nn.Parameter(torch.randn(12, 1) / 12 ** 0.5)
        self.b2 = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2


def make_gelu():
    return nn.Sequential(nn.Linear(2, 16), nn.GELU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 1))


def make_refused():
    """ONNX files that `ntk` must refuse with one line naming the operator (no references)."""
    torch.manual_seed(9)
    x = np.zeros((2, 2))
    leaky = nn.Sequential(nn.Linear(2, 4), nn.LeakyReLU(), nn.Linear(4, 1)).eval()
    export_torchscript(leaky, x, path("refused-leakyrelu.onnx"))
    softmax = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3), nn.Softmax(dim=1)).eval()
    export_torchscript(softmax, x, path("refused-softmax.onnx"))
    # Opset 20's Gelu with approximate="tanh" is another function than the exact GELU.
    tanh_gelu = nn.Sequential(nn.Linear(2, 16), nn.GELU(approximate="tanh"), nn.Linear(16, 16), nn.Tanh(),
                              nn.Linear(16, 1)).eval()
    export_dynamo(tanh_gelu, x, path("refused-gelu-tanh.onnx"))


def make_classifier():
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def train(model, x, y, classify=False, epochs=300, lr=1e-2):
    """Full-batch Adam in float32; returns the final training loss (MSE or cross-entropy)."""
    xt = torch.tensor(x, dtype=torch.float32)
    if classify:
        yt, loss_fn = torch.tensor(y, dtype=torch.long), nn.CrossEntropyLoss()
    else:
        yt, loss_fn = torch.tensor(y, dtype=torch.float32)[:, None], nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return float(loss_fn(model(xt), yt))


# ---------------------------------------------------------------------------------------------
# Export and checks
# ---------------------------------------------------------------------------------------------


def export_torchscript(model, x, path):
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    torch.onnx.export(
        model, (torch.tensor(x[:2], dtype=torch.float32),), path, dynamo=False,
        input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17,
    )


def export_dynamo(model, x, path):
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model, (torch.tensor(x[:2], dtype=torch.float32),), dynamo=True, verbose=False,
        input_names=["x"], output_names=["y"], dynamic_shapes=({0: batch},),
    )
    program.save(path, external_data=True)
    # onnx_ir externalizes only tensors over 256 bytes: the big weight lives in the .data file,
    # the small ones (conv kernel, biases, shape constants) stay inline, as users will see it.
    data = path + ".data"
    assert os.path.exists(data), data
    proto = onnx.load(path, load_external_data=False)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, f"no external initializer in {path}"
    raw = open(path, "rb").read()
    for t in external:
        assert not t.raw_data and t.external_data[0].value == os.path.basename(data), t.name
        weight = dict(model.named_parameters())[t.name].detach().numpy().tobytes()
        assert weight not in raw and weight in open(data, "rb").read(), t.name


def check_onnx(model, x, path):
    """onnxruntime reproduces the float32 PyTorch outputs on x."""
    x32 = np.asarray(x, dtype=np.float32)
    with torch.no_grad():
        want = model(torch.tensor(x32)).numpy()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x32})[0]
    diff = float(np.abs(got - want).max())
    assert got.shape == want.shape and diff < 1e-5, (path, got.shape, want.shape, diff)
    return diff


def float64_copy(model, safetensors_path):
    """A float64 copy of the module holding the exported float32 weights."""
    m64 = copy.deepcopy(model)
    m64.load_state_dict(load_file(safetensors_path))
    return m64.double().eval()


# ---------------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------------


def outputs_and_jacobian(m64, x):
    """Outputs (n, C) and the Jacobian (n·C, p), rows point-major, columns in parameter order."""
    params = {k: v.detach() for k, v in m64.named_parameters()}
    xt = torch.tensor(x, dtype=torch.float64)

    def out(p):
        return torch.func.functional_call(m64, p, (xt,))

    jac = torch.func.jacrev(out)(params)
    rows = len(x) * out(params).shape[1]
    j = torch.cat([jac[k].reshape(rows, -1) for k in params], dim=1)
    return out(params).detach().numpy(), j.numpy()


def check_finite_difference(m64, x, j, rng, count=8, h=1e-6):
    """Central differences of a few Jacobian entries (the largest ones and random ones)."""
    names = [k for k, _ in m64.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in m64.named_parameters()])
    shapes = [p.shape for _, p in m64.named_parameters()]
    xt = torch.tensor(x, dtype=torch.float64)

    def out(theta):
        params, at = {}, 0
        for k, s in zip(names, shapes):
            size = math.prod(s)
            params[k] = theta[at:at + size].reshape(s)
            at += size
        return torch.func.functional_call(m64, params, (xt,)).reshape(-1).numpy()

    big = np.argsort(-np.abs(j), axis=None)[: count // 2]
    picks = [np.unravel_index(i, j.shape) for i in big]
    picks += [(rng.integers(j.shape[0]), rng.integers(j.shape[1])) for _ in range(count // 2)]
    with torch.no_grad():
        for row, col in picks:
            plus, minus = flat.clone(), flat.clone()
            plus[col] += h
            minus[col] -= h
            fd = (out(plus)[row] - out(minus)[row]) / (2 * h)
            assert abs(fd - j[row, col]) < 1e-6 * max(1.0, abs(j[row, col])), (row, col, fd, j[row, col])


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def regression_reference(j_tr, j_te, y, mu_tr, mu_te):
    n = len(y)
    a = PRIOR_SCALE * j_tr @ j_tr.T + NOISE * np.eye(n)
    chol = np.linalg.cholesky(a)

    def solve(b):
        return np.linalg.solve(chol.T, np.linalg.solve(chol, b))

    r = y - mu_tr
    alpha = solve(r)
    k_star = PRIOR_SCALE * j_te @ j_tr.T
    mean = mu_te + k_star @ alpha
    var = PRIOR_SCALE * np.sum(j_te * j_te, axis=1) - np.sum(k_star * solve(k_star.T).T, axis=1)
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    lml = -0.5 * r @ alpha - 0.5 * logdet - 0.5 * n * np.log(2.0 * np.pi)
    return {
        "noise": NOISE,
        "prior_scale": PRIOR_SCALE,
        "mean": mean.tolist(),
        "var": var.tolist(),
        "log_marginal_likelihood": float(lml),
        "n_params": int(j_tr.shape[1]),
    }


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def block_diag(blocks):
    n, c, _ = blocks.shape
    out = np.zeros((n * c, n * c))
    for i, b in enumerate(blocks):
        out[i * c:(i + 1) * c, i * c:(i + 1) * c] = b
    return out


def softmax_curvature(f, c):
    """W and its symmetric square root W½ (nC × nC, block diagonal) at the logits f (nC,)."""
    pi = softmax(f.reshape(-1, c))
    w = np.stack([np.diag(p) - np.outer(p, p) for p in pi])
    half = []
    for b in w:
        lam, q = np.linalg.eigh(b)
        half.append((q * np.sqrt(np.clip(lam, 0.0, None))) @ q.T)
    return pi, block_diag(w), block_diag(np.stack(half))


def laplace_mode(k, mu, y, c):
    """Newton iterations for the mode; returns f, the gradient at f, W½ and chol(B) there, and lml."""
    n = len(y)
    onehot = np.eye(c)[y].reshape(-1)
    f, a = mu.copy(), np.zeros_like(mu)
    psi = np.sum(log_softmax(f.reshape(n, c))[np.arange(n), y])
    for _ in range(100):
        pi, w, w_half = softmax_curvature(f, c)
        grad = onehot - pi.reshape(-1)
        b = w @ (f - mu) + grad
        chol = np.linalg.cholesky(np.eye(n * c) + w_half @ k @ w_half)
        a = b - w_half @ np.linalg.solve(chol.T, np.linalg.solve(chol, w_half @ (k @ b)))
        f = mu + k @ a
        new = np.sum(log_softmax(f.reshape(n, c))[np.arange(n), y]) - 0.5 * a @ (f - mu)
        done, psi = abs(new - psi) < 1e-12, new
        if done:
            break
    else:
        raise RuntimeError("Laplace Newton did not converge")
    pi, _, w_half = softmax_curvature(f, c)
    chol = np.linalg.cholesky(np.eye(n * c) + w_half @ k @ w_half)
    lml = psi - np.sum(np.log(np.diag(chol)))
    return onehot - pi.reshape(-1), w_half, chol, float(lml)


def expected_calibration_error(proba, y, bins=10):
    conf, pred = proba.max(axis=1), proba.argmax(axis=1)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(np.mean(pred[sel] == y[sel]) - np.mean(conf[sel]))
    return float(ece)


def classifier_reference(j_tr, j_te, y_tr, y_te, mu_tr, mu_te):
    n, c = mu_tr.shape
    m = len(y_te)
    s2 = CLASS_PRIOR_SCALE
    k = s2 * j_tr @ j_tr.T
    grad, w_half, chol, lml = laplace_mode(k, mu_tr.reshape(-1), y_tr, c)
    k_star = s2 * j_tr @ j_te.T  # (nC, mC)
    mean = (mu_te.reshape(-1) + k_star.T @ grad).reshape(m, c)
    v = np.linalg.solve(chol, w_half @ k_star)
    cov = np.empty((m, c, c))
    for i in range(m):
        ji = j_te[i * c:(i + 1) * c]
        vi = v[:, i * c:(i + 1) * c]
        cov[i] = s2 * ji @ ji.T - vi.T @ vi
    var = np.stack([np.diag(s) for s in cov])
    proba = softmax(mean / np.sqrt(1.0 + np.pi / 8.0 * var))
    return {
        "prior_scale": CLASS_PRIOR_SCALE,
        "mean": mean.tolist(),
        "var": var.tolist(),
        "proba": proba.tolist(),
        "log_marginal_likelihood": lml,
        "accuracy": float(np.mean(proba.argmax(axis=1) == y_te)),
        "nll": float(np.mean(-np.log(proba[np.arange(m), y_te]))),
        "ece": expected_calibration_error(proba, y_te),
        "n_params": int(j_tr.shape[1]),
    }


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def path(name):
    return os.path.join(OUT, name)


def fixture(name, model, source, new, onnx_exports, classify=False, epochs=300):
    """Train, export, check and write the CSVs and the reference of one network."""
    (xs, ys), (x_tr, y_tr, x_te, y_te) = source, new
    loss = train(model, xs, ys, classify=classify, epochs=epochs)
    write_csv(path(f"{name}.train.csv"), x_tr, y_tr)
    write_csv(path(f"{name}.test.csv"), x_te, y_te)
    st = path(f"{name}.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, st)
    for file, exporter in onnx_exports:
        exporter(model, x_te, path(file))
        check_onnx(model, x_te, path(file))

    m64 = float64_copy(model, st)
    mu_tr, j_tr = outputs_and_jacobian(m64, x_tr)
    mu_te, j_te = outputs_and_jacobian(m64, x_te)
    check_finite_difference(m64, x_tr, j_tr, np.random.default_rng(7))
    check_finite_difference(m64, x_te, j_te, np.random.default_rng(8))
    if classify:
        ref = classifier_reference(j_tr, j_te, y_tr, y_te, mu_tr, mu_te)
    else:
        ref = regression_reference(j_tr, j_te, y_tr, mu_tr[:, 0], mu_te[:, 0])
    write_json(path(f"{name}.reference.json"), ref)
    return loss, ref


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    summary = []

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    source = cnn_source(rng)
    x_tr, y_tr = cnn_new(rng, rng.uniform(0, 3.5, 24), rng.uniform(0, 7, 24))
    x_te, y_te = cnn_new(rng, np.arange(29) * 0.25, np.full(29, 3.5))
    exports = [("cnn.onnx", export_torchscript), ("cnn-dynamo.onnx", export_dynamo)]
    loss, ref = fixture("cnn", make_cnn(), source, (x_tr, y_tr, x_te, y_te), exports, epochs=400)
    summary.append(("cnn", loss, ref))

    mlps = [
        ("resmlp", make_resmlp, [("resmlp.onnx", export_torchscript)]),
        ("named", Named, [("named.onnx", export_torchscript)]),
        ("gapped", make_gapped, []),
        # Exact GELU: the TorchScript exporter (opset 17) writes its erf pattern, the dynamo
        # exporter (opset 20) a Gelu node.
        ("gelu", make_gelu, [("gelu.onnx", export_torchscript), ("gelu-dynamo.onnx", export_dynamo)]),
    ]
    for seed, (name, make, exports) in enumerate(mlps, start=1):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        source = mlp_source(rng)
        x_tr, y_tr = mlp_new(rng, 30)
        x_te, y_te = mlp_new(rng, 15)
        loss, ref = fixture(name, make(), source, (x_tr, y_tr, x_te, y_te), exports, epochs=1000)
        summary.append((name, loss, ref))

    # Seed 5: plain Newton (no line search, as specified) converges here in 7-9 steps for any
    # s² in [0.5, 3]. With other seeds a confidently misclassified point (W ≈ 0) makes the
    # first full step overshoot and the iteration cycles; a halved first step would converge.
    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    source = blobs(rng, 200, CLASS_CENTRES)
    x_tr, y_tr = blobs(rng, 12, CLASS_CENTRES + CLASS_SHIFT)
    x_te, y_te = blobs(rng, 10, CLASS_CENTRES + CLASS_SHIFT)
    new = (rounded(x_tr), y_tr, rounded(x_te), y_te)
    exports = [("classifier.onnx", export_torchscript)]
    loss, ref = fixture("classifier", make_classifier(), source, new, exports, classify=True, epochs=300)
    summary.append(("classifier", loss, ref))

    # The remaining operators: BatchNormalization, AveragePool, Sigmoid, Elu, Softplus, a
    # Reshape flatten (from a shape computation), MatMul + Add.
    torch.manual_seed(6)
    rng = np.random.default_rng(6)
    source = cnn_source(rng, n=256)
    x_tr, y_tr = cnn_new(rng, rng.uniform(0, 7, 16), rng.uniform(0, 7, 16))
    x_te, y_te = cnn_new(rng, rng.uniform(0, 7, 8), rng.uniform(0, 7, 8))
    exports = [("cnn-ops.onnx", export_torchscript)]
    loss, ref = fixture("cnn-ops", make_cnn_ops(), source, (x_tr, y_tr, x_te, y_te), exports,
                        epochs=300)
    summary.append(("cnn-ops", loss, ref))
    torch.manual_seed(7)
    rng = np.random.default_rng(7)
    source = mlp_source(rng)
    x_tr, y_tr = mlp_new(rng, 30)
    x_te, y_te = mlp_new(rng, 15)
    loss, ref = fixture("matmul", MatMulMlp(), source, (x_tr, y_tr, x_te, y_te),
                        [("matmul.onnx", export_torchscript)], epochs=1000)
    summary.append(("matmul", loss, ref))

    make_refused()

    for name, loss, ref in summary:
        extra = f", accuracy {ref['accuracy']:.3f}" if "accuracy" in ref else ""
        print(f"{name:>10}: p = {ref['n_params']:5d}, source loss {loss:.5f}, "
              f"lml {ref['log_marginal_likelihood']:.6f}{extra}")
    total = 0
    for file in sorted(os.listdir(OUT)):
        size = os.path.getsize(path(file))
        total += size
        print(f"  {file:<28} {size:7d} B")
    print(f"  {'total':<28} {total:7d} B")


if __name__ == "__main__":
    main()
