"""Channel pruning without fine-tuning: MaxVol against magnitude and random channels.

Trains the small CNN of ``graft.harness._models`` (``make_model("cnn", ...)``) on
Fashion-MNIST (scikit-learn's digits if the IDX files are absent) with the
project's loader and training loop, then removes 50% and 75% of the channels
of both convolutions (conv1 -> ReLU -> MaxPool -> conv2, and conv2 -> ReLU ->
AdaptiveAvgPool -> Flatten -> Linear) with ``graft.prune_model``, with no
fine-tuning. Each pair's activations are collected at the input of its next
layer (post-ReLU, post-pooling) on ``--calib`` training images.

Methods: MaxVol channels with the interpolative fold (the default of
``prune_channels``) and with the least-squares fold; the classic L1-norm
magnitude pruning (keep the filters with the largest L1 norm, drop the rest);
random channels (over ``--seeds`` draws); and, to separate what the selection
adds from what the folding adds, MaxVol without folding and magnitude and
random channels with the same least-squares folding.

Reports test accuracy, parameter count, and inference time (median of
``--repeats`` forward passes over 1000 test images, threads pinned); writes
``prune.json``, ``prune.png`` and the table in ``docs/pruning.md``.

    OPENBLAS_NUM_THREADS=2 python benchmarks/prune_bench.py [--out docs/benchmarks]
"""

from __future__ import annotations

import os

# Pin the BLAS before NumPy and torch load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _page import update_page

from graft import Graft, prune_model, train_epoch
from graft.harness import evaluate, load_dataset, make_model

RATIOS = (0.5, 0.75)
# conv1 (Sequential index 0) feeds conv2 (3) through ReLU and MaxPool; conv2
# feeds the first Linear (7) through ReLU, AdaptiveAvgPool and Flatten.
PAIRS = [("0", "3"), ("3", "7")]
# (label, select, fold, seeded)
METHODS = [
    ("MaxVol + interpolative fold (default)", "maxvol", "interpolative", False),
    ("MaxVol + least-squares fold", "maxvol", "lstsq", False),
    ("MaxVol, no fold", "maxvol", "none", False),
    ("L1 magnitude, no fold", "magnitude", "none", False),
    ("L1 magnitude + least-squares fold", "magnitude", "lstsq", False),
    ("random, no fold", "random", "none", True),
    ("random + least-squares fold", "random", "lstsq", True),
]


def train(train_set, test_set, info, epochs, seed):
    """The small CNN trained with the project's loop (all samples, Adam 1e-3)."""
    torch.manual_seed(seed)
    model = make_model("cnn", info["in_shape"], info["n_classes"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    graft = Graft(model, train_set, selector=None, batch_size=128, seed=seed)
    for epoch in range(epochs):
        start = time.perf_counter()
        loss = train_epoch(graft, optimizer, epoch)
        print(
            f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, test accuracy "
            f"{100 * evaluate(model, test_set):.2f}% "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    return model.eval()


def inference_ms(model, x, repeats):
    """Median wall time of a forward pass over ``x`` (ms), after one warm-up."""
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def _random_select(seed):
    rng = np.random.default_rng(seed)
    return lambda layer, keep: rng.choice(layer.out_channels, keep, replace=False)


def prune_rows(model, calib, test_set, timing_x, seeds, repeats):
    """One row per ratio and method: accuracy (mean, std), parameters, time."""
    base_acc = evaluate(model, test_set)
    base = {
        "ratio": 0.0,
        "method": "unpruned",
        "accuracy_mean": 100 * base_acc,
        "accuracy_std": 0.0,
        "runs": 1,
        "parameters": sum(p.numel() for p in model.parameters()),
        "channels": [16, 32],
        "inference_ms": inference_ms(model, timing_x, repeats),
        "prune_s": 0.0,
    }
    rows = [base]
    print(f"unpruned: {base['accuracy_mean']:.2f}%", flush=True)
    for ratio in RATIOS:
        for label, select, fold, seeded in METHODS:
            accs, prune_s = [], []
            for seed in range(seeds if seeded else 1):
                chosen = _random_select(seed) if select == "random" else select
                start = time.perf_counter()
                pruned, report = prune_model(
                    model, PAIRS, calib, fraction=1 - ratio, select=chosen, fold=fold
                )
                prune_s.append(time.perf_counter() - start)
                accs.append(100 * evaluate(pruned, test_set))
            row = {
                "ratio": ratio,
                "method": label,
                "accuracy_mean": statistics.mean(accs),
                "accuracy_std": statistics.pstdev(accs),
                "runs": len(accs),
                "parameters": report["parameters_after"],
                "channels": [p["channels_after"] for p in report["pairs"]],
                "inference_ms": inference_ms(pruned, timing_x, repeats),
                "prune_s": statistics.mean(prune_s),
            }
            rows.append(row)
            print(
                f"{ratio:.0%} {label:40s} {row['accuracy_mean']:.2f} +- "
                f"{row['accuracy_std']:.2f}  params {row['parameters']}  "
                f"{row['inference_ms']:.1f} ms",
                flush=True,
            )
    for row in rows:
        row["accuracy_drop"] = base["accuracy_mean"] - row["accuracy_mean"]
        row["time_vs_unpruned"] = row["inference_ms"] / base["inference_ms"]
    return rows


def markdown(meta, rows):
    lines = [
        f"Measured {meta['date']} on {meta['machine']}: {meta['dataset']}, small CNN "
        f"trained on {meta['train_size']} images for {meta['epochs']} epochs, "
        f"activations from {meta['calib']} training images, no fine-tuning; random "
        f"channels over {meta['seeds']} seeds; inference: median of "
        f"{meta['repeats']} forward passes over 1000 test images, "
        f"{meta['threads']} threads (load average {meta['load_average']:.2f} "
        "when the run started).",
        "",
        "| channels removed | conv channels kept | method | test accuracy % "
        "| drop (points) | parameters | inference (ms) | time vs unpruned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kept = " / ".join(str(c) for c in r["channels"])
        lines.append(
            f"| {r['ratio']:.0%} | {kept} | {r['method']} "
            f"| {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} "
            f"| {r['accuracy_drop']:.2f} | {r['parameters']} "
            f"| {r['inference_ms']:.1f} | {r['time_vs_unpruned']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1.4, 1], "wspace": 0.9}
    )
    base = rows[0]
    ax = axes[0]
    ax.axhline(base["accuracy_mean"], color="gray", ls="--", label="unpruned")
    methods = list(dict.fromkeys(r["method"] for r in rows[1:]))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        pts = [r for r in rows if r["method"] == method]
        ax.bar(
            [i + (k - len(methods) / 2 + 0.5) * width for i in range(len(pts))],
            [r["accuracy_mean"] for r in pts],
            width,
            yerr=[r["accuracy_std"] for r in pts],
            capsize=2,
            label=method,
        )
    ax.set_xticks(range(len(RATIOS)), [f"{r:.0%} removed" for r in RATIOS])
    ax.set_ylabel("test accuracy (%), no fine-tuning")
    ax.set_title("Accuracy after pruning both conv layers")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax = axes[1]
    by_ratio = {}
    for r in rows:
        by_ratio.setdefault(r["ratio"], r)
    pts = sorted(by_ratio.values(), key=lambda r: r["ratio"])
    ax.plot(
        [r["parameters"] for r in pts],
        [r["inference_ms"] for r in pts],
        marker="o",
    )
    for r in pts:
        ax.annotate(f"{r['ratio']:.0%} removed", (r["parameters"], r["inference_ms"]))
    ax.set_xlabel("parameters")
    ax.set_ylabel("inference time, 1000 images (ms)")
    ax.set_title("Size and speed")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _load_average():
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=30000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--calib", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = _load_average()
    train_set, test_set, info = load_dataset("auto", train_size=args.train_size)
    print(
        f"{info['name']}: {len(train_set)} train / {len(test_set)} test; "
        f"load average {load:.2f}",
        flush=True,
    )
    start = time.perf_counter()
    model = train(train_set, test_set, info, args.epochs, seed=0)
    train_s = time.perf_counter() - start
    calib = train_set.tensors[0][: args.calib]
    timing_x = test_set.tensors[0][:1000]
    rows = prune_rows(
        copy.deepcopy(model), calib, test_set, timing_x, args.seeds, args.repeats
    )
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores ({platform.machine()})",
        "dataset": info["name"],
        "train_size": len(train_set),
        "epochs": args.epochs,
        "calib": len(calib),
        "seeds": args.seeds,
        "repeats": args.repeats,
        "threads": args.threads,
        "load_average": load,
        "train_s": train_s,
        "torch": torch.__version__,
    }
    print(markdown(meta, rows))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "prune.json").write_text(
            json.dumps({"meta": meta, "rows": rows}, indent=2)
        )
        plot(rows, args.out / "prune.png")
        update_page(args.out.parent / "pruning.md", "prune-table", markdown(meta, rows))
        print(f"wrote {args.out}/prune.json, prune.png")
    return rows


if __name__ == "__main__":
    main()
