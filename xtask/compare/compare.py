#!/usr/bin/env python3
"""ntk-rs against the Python anchors (anchors/ in the repository), same problems, one run.

Called by `cargo xtask bench compare` with the anchors' virtual environment's python. For each
row it (1) dumps the anchors' own parameters and data (ntk_gp_anchor.make_params / make_data,
numpy seed 0) as raw f64 files, (2) runs the anchor configurations through ntk_gp_anchor.py
(one subprocess each, JSON lines, --dump for means/variances), (3) runs `ntk-bench compare` on
the dumped problem, and (4) prints and saves a table of times, ratios against the faster anchor,
peak memory and agreement (lml, means, variances).
"""
import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

FIG4_MF = ["--cg-tol", "1e-2", "--probes", "2", "--lanczos", "15", "--nt-impl", "1"]


def rows(all_anchors):
    """(tag, arch, n, n_test, task, dtype, anchors, anchor_reps, ours_reps, goal). anchors: [(backend, mode)]."""
    out = []
    for n in (100, 1000):
        # ours: 30 repetitions (the whole row takes under a second), so that the median is
        # a steady state rather than the first few runs of a fresh process.
        out.append((f"sine-predict-{n}", "sine", n, 100, "predict", "f64",
                    [("jax-nt", "both"), ("torch", "both")], 3, 30, 5.0))
    for n in (500, 1000, 5000, 10000):
        if n <= 1000:
            anchors = [("jax-nt", "both"), ("torch", "both" if n <= 500 else "matfree")]
        else:
            anchors = [("jax-nt", "matfree")] + ([("torch", "matfree")] if all_anchors else [])
        out.append((f"fig4-lml-{n}", "fig4", n, 10, "logprob", "f32", anchors,
                    1 if n <= 2000 else 0, 3 if n <= 1000 else 1, 15.0))
    return out


def product_rows():
    """(tag, n, anchor_reps, ours_reps): the per-product benchmark on the 803k MLP."""
    return [("fig4-products-1000", 1000, 3, 5), ("fig4-products-10000", 10000, 1, 2)]


def load_avg():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except Exception:
        return float("nan")


def fastest_of(records, modes):
    """The anchor record with the smallest median time among `modes`, or None."""
    timed = [x for x in records if x.get("mode") in modes and "t_median" in x]
    return min(timed, key=lambda x: x["t_median"]) if timed else None


def relerr(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def dump_problem(A, d, arch, n, n_test, task, sigma2):
    os.makedirs(d, exist_ok=True)
    widths = A.ARCHS[arch]
    params = A.make_params(widths, 0)
    X, y, Xs = A.make_data(arch, n, n_test, 0)
    theta = np.concatenate([np.concatenate([W.ravel(), b.ravel()]) for W, b in params])
    for name, arr in (("theta", theta), ("X", X), ("y", y), ("Xs", Xs)):
        np.ascontiguousarray(arr, dtype="<f8").tofile(os.path.join(d, name + ".bin"))
    with open(os.path.join(d, "meta.json"), "w") as fh:
        json.dump(dict(widths=widths, n=n, n_test=n_test, sigma2=sigma2, task=task, arch=arch), fh)


def run_anchor(py, anchors_dir, arch, n, n_test, task, dtype, backend, mode, reps, dump, log, timeout,
               extra=None):
    cmd = [py, os.path.join(anchors_dir, "ntk_gp_anchor.py"), "--arch", arch, "--n-train", str(n),
           "--n-test", str(n_test), "--backend", backend, "--task", task, "--mode", mode,
           "--dtype", dtype, "--reps", str(reps)]
    if dump:
        cmd += ["--dump", dump]
    if arch == "fig4" and task in ("predict", "logprob"):
        cmd += FIG4_MF
    cmd += extra or []
    print("#   $ " + " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        stdout, rc = r.stdout, r.returncode
    except subprocess.TimeoutExpired as e:
        stdout, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    recs = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rec = json.loads(line)
            recs.append(rec)
            log.write(json.dumps(rec) + "\n")
    print(f"#     rc={rc} wall={time.time() - t0:.1f}s", flush=True)
    return recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--ntk-bench", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="rows with n <= 1000 only")
    ap.add_argument("--rows", default=None, help="comma-separated substrings of row tags")
    ap.add_argument("--all-anchors", action="store_true", help="also torch at fig4 n >= 5000 (~4 + 8 min)")
    ap.add_argument("--skip-anchors", action="store_true", help="reuse anchor lines from --out/anchors.jsonl")
    ap.add_argument("--timeout", type=int, default=1500)
    a = ap.parse_args()

    sys.path.insert(0, os.path.abspath(a.anchors))
    import ntk_gp_anchor as A  # noqa: E402 (the anchors' own generators)

    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H%M")
    anchor_log_path = os.path.join(a.out, "anchors.jsonl")
    old_anchor = {}
    if a.skip_anchors and os.path.exists(anchor_log_path):
        for line in open(anchor_log_path):
            r = json.loads(line)
            if r.get("kind") == "anchor":
                old_anchor.setdefault((r["arch"], r["n_train"], r["task"]), []).append(r)
    anchor_log = open(anchor_log_path, "a")
    results = []
    wanted = [s.strip() for s in a.rows.split(",")] if a.rows else None
    for tag, arch, n, n_test, task, dtype, anchors, areps, oreps, goal in rows(a.all_anchors):
        if a.quick and n > 1000:
            continue
        if wanted and not any(w in tag for w in wanted):
            continue
        print(f"# {tag}", flush=True)
        sigma2 = 0.01 if arch == "sine" else 1.0
        pdir = os.path.join(a.out, "problems", tag)
        dump_problem(A, pdir, arch, n, n_test, task, sigma2)
        load_before = load_avg()
        arecs, dumps = [], {}
        if a.skip_anchors:
            arecs = old_anchor.get((arch, n, task), [])
        else:
            for backend, mode in anchors:
                dump = os.path.join(pdir, f"anchor-{backend}.npz")
                arecs += run_anchor(sys.executable, a.anchors, arch, n, n_test, task, dtype, backend, mode,
                                    areps, dump, anchor_log, a.timeout)
        for backend, _ in anchors:
            dump = os.path.join(pdir, f"anchor-{backend}.npz")
            if os.path.exists(dump):
                dumps[backend] = dict(np.load(dump))
        cmd = [a.ntk_bench, "compare", pdir, "--reps", str(oreps)]
        if arch == "fig4":
            cmd.append("--reference")
        print("#   $ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            results.append(dict(tag=tag, error=r.stderr.strip()[-500:]))
            continue
        ours = json.loads(r.stdout.strip().splitlines()[-1])
        timed = [x for x in arecs if x.get("mode") in ("dense", "matfree") and "t_median" in x]
        fastest = fastest_of(arecs, ("dense", "matfree"))
        dense = next((x for x in timed if x["mode"] == "dense" and x["backend"] == "jax-nt"), None) or \
            next((x for x in timed if x["mode"] == "dense"), None)
        own = [x for x in arecs if x.get("mode") == "agreement"]
        row = dict(tag=tag, n=n, p=A.n_params(A.ARCHS[arch]), task=task, goal=goal,
                   ours_s=ours["t_median"], ours_first_s=ours["t_first"], ours_peak_mib=ours["peak_rss_mib"],
                   ours_dtype=ours["dtype"], ours_lml=ours["lml"], ours_method=ours["method"],
                   load_before=load_before, load_after=load_avg(),
                   kernel_s=ours["kernel_s"], kernel_gflops=ours["kernel_gflops"],
                   factor_s=ours["factor_s"], factor_gflops=ours["factor_gflops"],
                   gemm_gflops=ours.get("gemm_gflops"))
        if fastest:
            row.update(anchor=f'{fastest["backend"]} {fastest["mode"]} {fastest["dtype"]}',
                       anchor_s=fastest["t_median"], anchor_peak_mib=fastest.get("peak_rss_mib"),
                       anchor_lml=fastest.get("lml"), ratio=fastest["t_median"] / ours["t_median"])
            row["goal_met"] = row["ratio"] >= goal
        kern = [x for x in timed if x["mode"] == "dense" and x.get("t_kernel")]
        if kern:
            k = min(kern, key=lambda x: x["t_kernel"])
            row.update(anchor_kernel=f'{k["backend"]} dense', anchor_kernel_s=k["t_kernel"])
        if dense:
            row["lml_vs_anchor_dense"] = abs(ours["lml"] - dense["lml"]) / abs(dense["lml"])
            d = dumps.get(dense["backend"], {})
            if ours.get("mean") is not None and "dense_mean" in d:
                row["mean_vs_anchor_dense"] = relerr(ours["mean"], d["dense_mean"])
                row["var_vs_anchor_dense"] = relerr(ours["var"], d["dense_var"])
        if ours.get("lml_f64_reference") is not None:
            row["lml_vs_own_f64"] = abs(ours["lml"] - ours["lml_f64_reference"]) / abs(ours["lml_f64_reference"])
        mf = [x for x in timed if x["mode"] == "matfree"]
        if mf:
            ref = dense["lml"] if dense else ours.get("lml_f64_reference", ours["lml"])
            row["anchor_matfree_lml_err"] = min(abs(x["lml"] - ref) / abs(ref) for x in mf)
        if own:
            row["anchor_own_lml_err"] = min(x.get("lml_relerr", float("nan")) for x in own)
            row["anchor_own_var_err"] = min((x["var_relerr"] for x in own if "var_relerr" in x), default=None)
        results.append(row)
        print("#   " + json.dumps(row), flush=True)
    products = []
    for tag, n, areps, oreps in product_rows():
        if a.quick and n > 1000:
            continue
        if wanted and not any(w in tag for w in wanted):
            continue
        print(f"# {tag}", flush=True)
        pdir = os.path.join(a.out, "problems", tag)
        dump_problem(A, pdir, "fig4", n, 10, "logprob", 1.0)
        arecs = []
        if a.skip_anchors:
            arecs = [r for r in old_anchor.get(("fig4", n, "matvec"), []) + old_anchor.get(("fig4", n, "fvp"), [])]
        else:
            for backend in ("jax-nt", "torch"):
                arecs += run_anchor(sys.executable, a.anchors, "fig4", n, 10, "matvec", "f32", backend, "dense",
                                    areps, None, anchor_log, a.timeout, ["--matvec-k", "1"])
                arecs += run_anchor(sys.executable, a.anchors, "fig4", n, 10, "fvp", "f32", backend, "dense",
                                    areps, None, anchor_log, a.timeout, ["--unit-v", "--eps", "1e-4"])
        cmd = [a.ntk_bench, "compare", pdir, "--products", "--reps", str(oreps)]
        print("#   $ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            products.append(dict(tag=tag, error=r.stderr.strip()[-500:]))
            continue
        ours = json.loads(r.stdout.strip().splitlines()[-1])

        row = dict(tag=tag, n=n, ours=ours, load_after=load_avg())
        for name, mode, warm, cold in (("NTK product K u", "matvec", "ntk_warm_s", "ntk_cold_s"),
                                       ("GGN product J^T H J v", "fvp-ggn", "ggn_warm_s", "ggn_cold_s")):
            b = fastest_of(arecs, (mode,))
            row[name] = dict(warm=ours[warm], cold=ours[cold],
                             anchor=(f'{b["backend"]} {mode}' if b else None),
                             anchor_s=(b["t_median"] if b else None))
        products.append(row)
        print("#   " + json.dumps(row), flush=True)
    anchor_log.close()

    def f(v, fmt="{:.3g}"):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = ["| row | p | ntk-rs s | faster anchor | anchor s | ratio (goal) | ntk-rs peak MiB | anchor peak MiB "
             "| lml rel. err vs anchor dense | mean / var rel. err vs anchor dense | ntk-rs f32 vs own f64 "
             "| anchors' matfree lml err | load before/after |",
             "|---" * 13 + "|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['tag']} | failed: {r['error'][:80]} |" + " |" * 11)
            continue
        ratio = f(r.get("ratio"), "{:.1f}×")
        if "goal_met" in r:
            ratio += f" ({r['goal']:.0f}×{' ✓' if r['goal_met'] else ' ✗'})"
        mv = ""
        if "mean_vs_anchor_dense" in r:
            mv = f"{r['mean_vs_anchor_dense']:.1e} / {r['var_vs_anchor_dense']:.1e}"
        lines.append(
            f"| {r['tag']} | {r['p']} | {f(r['ours_s'])} ({r['ours_dtype']}) | {r.get('anchor', '')} | "
            f"{f(r.get('anchor_s'))} | {ratio} | {f(r['ours_peak_mib'], '{:.0f}')} | "
            f"{f(r.get('anchor_peak_mib'), '{:.0f}')} | {f(r.get('lml_vs_anchor_dense'), '{:.1e}')} | {mv} | "
            f"{f(r.get('lml_vs_own_f64'), '{:.1e}')} | {f(r.get('anchor_matfree_lml_err'), '{:.1e}')} | "
            f"{f(r['load_before'], '{:.1f}')}/{f(r['load_after'], '{:.1f}')} |")
    lines += ["", "Roofline (ntk-rs, last run): where the time goes, against the GEMM peak measured in the "
              "same process.", "",
              "| row | dtype | total s | factors + NTK s | NTK GFLOP/s | Cholesky s | Cholesky GFLOP/s "
              "| rest s | GEMM peak f32 / f64 GFLOP/s |", "|---" * 9 + "|"]
    for r in results:
        if "error" in r:
            continue
        g = r.get("gemm_gflops") or [float("nan"), float("nan")]
        lines.append(f"| {r['tag']} | {r['ours_dtype']} | {f(r['ours_s'])} | {f(r['kernel_s'])} | "
                     f"{f(r['kernel_gflops'], '{:.1f}')} | {f(r['factor_s'])} | {f(r['factor_gflops'], '{:.1f}')} | "
                     f"{f(max(r['ours_s'] - r['kernel_s'] - r['factor_s'], 0.0))} | "
                     f"{f(g[0], '{:.1f}')} / {f(g[1], '{:.1f}')} |")
    lines += ["", "Dense structured NTK: the training kernel's time, factors included, against the "
              "anchors' kernel phase (`t_kernel`) in the same run; goal 10×.", "",
              "| row | n | ntk-rs s | faster anchor kernel | anchor s | ratio (goal 10×) |", "|---" * 6 + "|"]
    for r in results:
        if "error" in r or r.get("anchor_kernel_s") is None:
            continue
        ratio = r["anchor_kernel_s"] / r["kernel_s"]
        lines.append(f"| {r['tag']} | {r['n']} | {f(r['kernel_s'])} | {r['anchor_kernel']} | "
                     f"{f(r['anchor_kernel_s'])} | {ratio:.1f}×{' ✓' if ratio >= 10 else ' ✗'} |")
    if products:
        lines += ["", "Jacobian products on the 803k MLP, f32, one column. *warm*: factors cached (as "
                  "inside CG); *cold*: factors computed first, as the anchors' timers do (their `matvec` and "
                  "`fvp-ggn` include the forward pass); goal 2× against the faster anchor.", "",
                  "| row | product | ntk-rs warm s | ntk-rs cold s | faster anchor | anchor s | ratio warm | ratio cold |",
                  "|---" * 8 + "|"]
        for r in products:
            if "error" in r:
                lines.append(f"| {r['tag']} | failed: {r['error'][:80]} |" + " |" * 6)
                continue
            o = r["ours"]
            lines.append(f"| {r['tag']} | Jv | {f(o['jvp_s'])} ({o['jvp_gflops']:.0f} GFLOP/s) | | | | | |")
            lines.append(f"| {r['tag']} | Jᵀu | {f(o['vjp_s'])} ({o['vjp_gflops']:.0f} GFLOP/s) | | | | | |")
            for name in ("NTK product K u", "GGN product J^T H J v"):
                x = r[name]
                rw = rc = ""
                if x["anchor_s"]:
                    rw = f"{x['anchor_s'] / x['warm']:.1f}×"
                    rc = f"{x['anchor_s'] / x['cold']:.1f}×"
                lines.append(f"| {r['tag']} | {name} | {f(x['warm'])} | {f(x['cold'])} | {x['anchor'] or ''} | "
                             f"{f(x['anchor_s'])} | {rw} | {rc} |")
            lines.append(f"| {r['tag']} | factors (forward + backward) | {f(o['factors_s'])} | | | | | |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(a.out, f"compare-{stamp}.md"), "w") as fh:
        fh.write(f"# ntk-rs vs anchors, {stamp} UTC\n\n{table}\n")
    with open(os.path.join(a.out, f"compare-{stamp}.json"), "w") as fh:
        json.dump(dict(rows=results, products=products), fh, indent=1)
    print(f"# saved {a.out}/compare-{stamp}.md and .json")
    return 0 if all("error" not in r for r in results + products) else 1


if __name__ == "__main__":
    sys.exit(main())
