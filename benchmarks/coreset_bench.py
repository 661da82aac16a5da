"""Coresets and column subsets for logistic regression: MaxVol against the baselines.

Rows: logistic regression trained on the rows each method selects from the
training set, test accuracy, at budgets of 1%, 2%, 5% and 10% of the rows.
Methods: ``MaxVolSampler`` (plain and stratified), random rows and
stratified random rows (mean and std over ``--seeds`` draws), k-means++
seeds (``sklearn.cluster.kmeans_plusplus``, over 5 seeds), k-center greedy
(farthest-first traversal, over 5 seeds) and apricot's submodular
``FacilityLocationSelection`` (stratified: one per class; when apricot is
installed, and only where the n x n similarities fit in memory). Every row
records the seconds per selection and the peak memory of one (tracemalloc).

Columns: logistic regression on the columns ``MaxVolFeatureSelector`` keeps,
against ``SelectKBest(f_classif)`` and random columns.

Data: scikit-learn's digits (70/30 split) and Fashion-MNIST from
``/usr/share/datasets/fashion-mnist`` (PCA-50 features for the rows, raw
pixels for the columns; skipped if the files are absent).

    python benchmarks/coreset_bench.py [--quick] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _page import update_page
from sklearn.cluster import kmeans_plusplus
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from graft.harness import load_digits_split, load_mnist_like
from maxvol_kit import MaxVolFeatureSelector, MaxVolSampler
from maxvol_kit.utils import allocate

# Facility location keeps an n x n similarity matrix: skip it above this.
_FACILITY_MAX_ROWS = 12000

BUDGETS = (0.01, 0.02, 0.05, 0.10)


def _accuracy(X_tr, y_tr, X_te, y_te):
    if np.unique(y_tr).size < 2:
        return float(np.mean(y_te == y_tr[0]))
    model = LogisticRegression(max_iter=3000)
    return float(model.fit(X_tr, y_tr).score(X_te, y_te))


def _pm(row):
    return f"{row['mean']:.4f} +- {row['std']:.4f}"


def _stratified_random(y, K, rng):
    classes, counts = np.unique(y, return_counts=True)
    alloc = np.maximum(1, np.round(K * counts / counts.sum()).astype(int))
    rows = [
        rng.choice(np.flatnonzero(y == c), min(a, n), replace=False)
        for c, a, n in zip(classes, alloc, counts, strict=True)
    ]
    return np.concatenate(rows)


def _k_center(X, K, seed):
    """Farthest-first traversal: each pick the row farthest from those picked."""
    rng = np.random.default_rng(seed)
    picks = [int(rng.integers(len(X)))]
    distance = np.linalg.norm(X - X[picks[0]], axis=1)
    for _ in range(K - 1):
        picks.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(X - X[picks[-1]], axis=1))
    return np.array(picks)


def _facility_location(X, y, K):
    """apricot's facility location within each class (budget by class size)."""
    from apricot import FacilityLocationSelection

    classes = np.unique(y)
    members = [np.flatnonzero(y == c) for c in classes]
    picks = []
    for rows, k in zip(members, allocate([len(m) for m in members], K), strict=True):
        if k:
            selector = FacilityLocationSelection(int(k), metric="euclidean")
            picks.append(rows[selector.fit(X[rows]).ranking])
    return np.concatenate(picks)


def _methods(X_tr, y_tr, K):
    n = len(X_tr)
    methods = {
        "MaxVolSampler": lambda s: (
            MaxVolSampler(K, random_state=s).fit(X_tr).sample_indices_
        ),
        "MaxVolSampler (stratified)": lambda s: (
            MaxVolSampler(K, stratify=True, random_state=s)
            .fit(X_tr, y_tr)
            .sample_indices_
        ),
        "random rows": lambda s: np.random.default_rng(s).choice(n, K, replace=False),
        "random rows (stratified)": lambda s: _stratified_random(
            y_tr, K, np.random.default_rng(s)
        ),
        "k-means++ seeds": lambda s: kmeans_plusplus(X_tr, K, random_state=s)[1],
        "k-center greedy": lambda s: _k_center(X_tr, K, s),
    }
    largest = max(np.bincount(y_tr))
    try:
        import apricot  # noqa: F401
    except ImportError:
        print("apricot not installed: facility location skipped")
    else:
        if largest <= _FACILITY_MAX_ROWS:
            methods["facility location (stratified)"] = lambda s: _facility_location(
                X_tr, y_tr, K
            )
    return methods


def _peak_bytes(pick):
    tracemalloc.start()
    try:
        pick(0)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def rows_table(name, X_tr, y_tr, X_te, y_te, seeds):
    """One row per method and budget: mean and std of the test accuracy."""
    out = []
    n = X_tr.shape[0]
    full = _accuracy(X_tr, y_tr, X_te, y_te)
    out.append(
        {"data": name, "budget": 1.0, "method": "full data", "mean": full, "std": 0.0}
    )
    for f in BUDGETS:
        K = max(1, round(f * n))
        for method, pick in _methods(X_tr, y_tr, K).items():
            # Random rows over all seeds; the seeded selectors over 5 seeds;
            # facility location is deterministic.
            runs = seeds if method.startswith("random") else 5
            runs = 1 if method.startswith("facility") else runs
            pick(0)  # once before timing: imports, JIT compilation
            start = time.perf_counter()
            accs = []
            for s in range(runs):
                idx = pick(s)
                accs.append(_accuracy(X_tr[idx], y_tr[idx], X_te, y_te))
            row = {
                "data": name,
                "budget": f,
                "method": method,
                "mean": float(np.mean(accs)),
                "std": float(np.std(accs)),
                "runs": runs,
                "seconds": (time.perf_counter() - start) / runs,
                "peak_mb": _peak_bytes(pick) / 2**20,
            }
            out.append(row)
            print(
                f"{name:14s} {f:5.0%} {method:32s} {_pm(row)} {row['seconds']:7.2f} s "
                f"{row['peak_mb']:8.1f} MB",
                flush=True,
            )
    return out


def columns_table(name, X_tr, y_tr, X_te, y_te, ks, seeds):
    """One row per method and number of columns kept."""
    out = []
    d = X_tr.shape[1]
    for k in ks:
        methods = {
            "MaxVolFeatureSelector": lambda s, k=k: (
                MaxVolFeatureSelector(k).fit(X_tr).get_support()
            ),
            "SelectKBest(f_classif)": lambda s, k=k: (
                SelectKBest(f_classif, k=k).fit(X_tr, y_tr).get_support()
            ),
            "random columns": lambda s, k=k: np.isin(
                np.arange(d), np.random.default_rng(s).choice(d, k, replace=False)
            ),
        }
        for method, pick in methods.items():
            runs = seeds if method.startswith("random") else 1
            accs = []
            for s in range(runs):
                cols = pick(s)
                accs.append(_accuracy(X_tr[:, cols], y_tr, X_te[:, cols], y_te))
            row = {
                "data": name,
                "k": k,
                "method": method,
                "mean": float(np.mean(accs)),
                "std": float(np.std(accs)),
            }
            out.append(row)
            print(f"{name:14s} k={k:4d} {method:24s} {_pm(row)}", flush=True)
    return out


def datasets(quick):
    """(name, rows data, columns data) for each data set on the machine."""
    X_tr, X_te, y_tr, y_te = load_digits_split()
    scaler = StandardScaler().fit(X_tr)
    digits = (scaler.transform(X_tr), y_tr, scaler.transform(X_te), y_te)
    yield "digits", digits, (X_tr, y_tr, X_te, y_te), (4, 8, 16, 32)
    try:
        images, labels = load_mnist_like(split="train")
        test_images, test_labels = load_mnist_like(split="test")
    except FileNotFoundError as exc:
        print(f"Fashion-MNIST skipped: {exc}")
        return
    X = images.reshape(len(images), -1) / 255.0
    Xt = test_images.reshape(len(test_images), -1) / 255.0
    if quick:
        X, labels = X[:10000], labels[:10000]
    pca = PCA(50, random_state=0).fit(X)
    scaler = StandardScaler().fit(pca.transform(X))
    rows = (
        scaler.transform(pca.transform(X)),
        labels,
        scaler.transform(pca.transform(Xt)),
        test_labels,
    )
    sub = np.random.default_rng(0).choice(len(X), 10000, replace=False)
    cols = (X[sub], labels[sub], Xt, test_labels)
    yield "fashion-mnist", rows, cols, (16, 32, 64, 128)


def markdown(results):
    lines = [
        f"Measured {results['date']}; logistic regression (max_iter=3000); random "
        f"rows over {results['seeds']} seeds, MaxVolSampler (random Fourier "
        "features), k-means++ and k-center greedy over 5 seeds, facility location "
        "(apricot, deterministic) once; time per selection and peak memory of one "
        "(tracemalloc); the column selectors are deterministic, random columns over "
        "the same seeds.",
        "",
        "| data | budget | method | test accuracy (mean +- std) | s | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        extra = (
            f"| {r['seconds']:.2f} | {r['peak_mb']:.1f} |"
            if "seconds" in r
            else "| | |"
        )
        lines.append(
            f"| {r['data']} | {r['budget']:.0%} | {r['method']} "
            f"| {100 * r['mean']:.2f} +- {100 * r['std']:.2f} {extra}"
        )
    lines += [
        "",
        "| data | columns kept | method | test accuracy (mean +- std) |",
        "|---|---|---|---|",
    ]
    for r in results["columns"]:
        lines.append(
            f"| {r['data']} | {r['k']} | {r['method']} "
            f"| {100 * r['mean']:.2f} +- {100 * r['std']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["data"] for r in results["rows"]))
    fig, axes = plt.subplots(
        1, len(names), figsize=(6 * len(names), 4.2), squeeze=False
    )
    for ax, name in zip(axes[0], names, strict=True):
        rows = [r for r in results["rows"] if r["data"] == name and r["budget"] < 1]
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = [r for r in rows if r["method"] == method]
            ax.errorbar(
                [100 * r["budget"] for r in pts],
                [100 * r["mean"] for r in pts],
                yerr=[100 * r["std"] for r in pts],
                marker="o",
                capsize=3,
                label=method,
            )
        full = [r for r in results["rows"] if r["data"] == name and r["budget"] == 1]
        ax.axhline(100 * full[0]["mean"], color="gray", ls="--", label="full data")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10], ["1%", "2%", "5%", "10%"])
        ax.set_xlabel("share of training rows")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{name}: logistic regression on a coreset")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 seeds, 10000 Fashion-MNIST training rows",
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    seeds = 5 if args.quick else args.seeds
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "seeds": seeds,
        "rows": [],
        "columns": [],
    }
    with threadpool_limits(args.threads):
        for name, rows, cols, ks in datasets(args.quick):
            results["rows"] += rows_table(name, *rows, seeds)
            results["columns"] += columns_table(name, *cols, ks, seeds)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "coreset_results.json").write_text(json.dumps(results, indent=2))
        plot(results, args.out / "coreset_accuracy.png")
        update_page(
            args.out.parent / "benchmarks.md", "coreset-table", markdown(results)
        )
        print(f"wrote {args.out}/coreset_results.json, coreset_accuracy.png")
    return results


if __name__ == "__main__":
    main()
