"""Pruning a ResNet and a CNN: prune_model's choices + fold against torch-pruning's.

Trains two models on Fashion-MNIST (scikit-learn's digits if the IDX files are
absent) with the project's loader and training loop, ``--seeds`` times each
(the seed sets the initialisation, the training order and the calibration
images): the small CNN of ``graft.harness.make_model("cnn", ...)`` and a small
ResNet built here (a stem, three basic blocks of 16, 32 and 64 channels with
BatchNorm and skip connections, the last two strided with 1x1 projections).
Then removes 50 % and 75 % of the channels of every prunable group (the
classifier's outputs stay) with:

- ``graft.prune_model``: its default (greedy fold residual with the
  least-squares fold), MaxVol channels (greedy volume of the output-weighted
  activations, kept here as a comparison) with the least-squares and the
  interpolative fold, and torch-pruning's group L1 magnitude with the
  least-squares fold (the same fold, another choice of channels);
- torch-pruning's ``MetaPruner`` (no fold, as its users run it) with the
  ``MagnitudeImportance`` (L1), ``TaylorImportance`` (gradient of one batch
  of ``--calib`` images) and ``HessianImportance`` (per-sample squared
  gradients of 64 images) importances, as they are and with the BatchNorm
  statistics re-estimated on the calibration images
  (``graft.recalibrate_batchnorm``, which ``prune_model`` applies after
  each group).

Each pruned model is evaluated as it is and after one epoch of fine-tuning
(Adam 3e-4, the training set). Reports the test accuracy drop against the
unpruned model of the same seed (mean +- sd over seeds), parameters and MACs
(torch-pruning's counter, one image); writes ``prune.json``, ``prune.png`` and
the table in ``docs/pruning.md``.

    OPENBLAS_NUM_THREADS=2 python benchmarks/prune_bench.py [--out docs/benchmarks]
"""

from __future__ import annotations

import os

# Pin the BLAS before NumPy and torch load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
import scipy.linalg
import torch
import torch_pruning as tp
from _page import update_page
from torch import nn

from graft import Graft, prune_model, recalibrate_batchnorm, train_epoch
from graft.harness import evaluate, load_dataset, make_model
from graft.prune import _groups

RATIOS = (0.5, 0.75)
# (label, how): "graft" rows run prune_model(select, fold); "tp" rows run
# torch-pruning's MetaPruner with the named importance.
# torch-pruning rows with "+ BN" have their BatchNorm statistics re-estimated
# on the calibration images (recalibrate_batchnorm), as prune_model does.
METHODS = [
    ("fold residual + least-squares fold (default)", ("graft", "residual", "lstsq")),
    ("MaxVol + least-squares fold", ("graft", "volume", "lstsq")),
    ("MaxVol + interpolative fold", ("graft", "volume", "interpolative")),
    ("L1 magnitude + least-squares fold", ("graft", "magnitude", "lstsq")),
    ("torch-pruning L1 magnitude", ("tp", "magnitude", False)),
    ("torch-pruning Taylor", ("tp", "taylor", False)),
    ("torch-pruning Hessian", ("tp", "hessian", False)),
    ("torch-pruning L1 magnitude + BN", ("tp", "magnitude", True)),
    ("torch-pruning Taylor + BN", ("tp", "taylor", True)),
    ("torch-pruning Hessian + BN", ("tp", "hessian", True)),
]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and the skip (a 1x1 conv-BN when the shape changes)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ResNet(nn.Module):
    """stem 16 -> blocks 16, 32 (stride 2), 64 (stride 2) -> average pool -> fc."""

    def __init__(self, in_channels, n_classes):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def build(kind, info):
    if kind == "resnet":
        return ResNet(info["in_shape"][0], info["n_classes"])
    return make_model("cnn", info["in_shape"], info["n_classes"])


def fit(model, train_set, epochs, seed, lr):
    """``epochs`` of Adam over all of ``train_set`` with the project's loop."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    graft = Graft(model, train_set, selector=None, batch_size=128, seed=seed)
    for epoch in range(epochs):
        train_epoch(graft, optimizer, epoch)
    graft.close()
    return model.eval()


def _classifier(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _tp_prune(model, example, calib, labels, importance, ratio):
    """torch-pruning's MetaPruner with one of its importances (no fold)."""
    model = copy.deepcopy(model).eval()
    imp = {
        "magnitude": lambda: tp.importance.MagnitudeImportance(p=1),
        "taylor": tp.importance.TaylorImportance,
        "hessian": tp.importance.HessianImportance,
    }[importance]()
    loss = nn.functional.cross_entropy
    if importance == "taylor":
        model.zero_grad()
        loss(model(calib), labels).backward()
    elif importance == "hessian":
        imp.zero_grad()
        for x, y in zip(calib[:64], labels[:64], strict=True):
            model.zero_grad()
            loss(model(x[None]), y[None]).backward()
            imp.accumulate_grad(model)
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=imp,
        pruning_ratio=ratio,
        ignored_layers=[_classifier(model)],
    )
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def _greedy_volume(select, group, R_w, keep, period, R, E):
    """Greedy volume of the output-weighted inputs ``R_w`` (column-pivoted QR).

    What ``prune_model`` chose before the greedy fold residual, which beat it
    in 7 of 8 cells of this table: kept here as the MaxVol row.
    """
    s, kl = R.shape[1] // period, keep // period
    blocks = np.vstack([R_w[:, G * s : (G + 1) * s] for G in range(period)])
    local = scipy.linalg.qr(blocks, pivoting=True, mode="r")[1][:kl]
    return np.concatenate([G * s + local for G in range(period)])


def _graft_prune(model, example, calib, select, fold, ratio):
    with contextlib.ExitStack() as stack:
        if select == "volume":
            stack.enter_context(mock.patch.object(_groups, "_choose", _greedy_volume))
        pruned, _ = prune_model(model, example, calib, fraction=1 - ratio,
                                select="residual" if select == "volume" else select,
                                fold=fold)  # fmt: skip
    return pruned


def _counts(model, example):
    with torch.no_grad():
        macs, parameters = tp.utils.count_ops_and_params(model.eval(), example)
    return int(macs), int(parameters)


def seed_rows(kind, info, train_set, test_set, args, seed):
    """Every (ratio, method) of one trained model: accuracy before and after."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = fit(build(kind, info), train_set, args.epochs, seed, lr=1e-3)
    train_s = time.perf_counter() - start
    base = 100 * evaluate(model, test_set)
    order = torch.randperm(
        len(train_set), generator=torch.Generator().manual_seed(seed)
    )
    X, y = train_set.tensors
    calib, labels = X[order[: args.calib]], y[order[: args.calib]]
    example = X[:1]
    macs, parameters = _counts(model, example)
    print(f"{kind} seed {seed}: {base:.2f}% after {train_s:.0f} s", flush=True)
    rows = [{"model": kind, "seed": seed, "ratio": 0.0, "method": "unpruned",
             "accuracy": base, "tuned": base, "macs": macs,
             "parameters": parameters}]  # fmt: skip
    for ratio in RATIOS:
        for label, how in METHODS:
            start = time.perf_counter()
            if how[0] == "graft":
                pruned = _graft_prune(model, example, calib, how[1], how[2], ratio)
            else:
                pruned = _tp_prune(model, example, calib, labels, how[1], ratio)
                if how[2]:
                    recalibrate_batchnorm(pruned, calib)
            prune_s = time.perf_counter() - start
            accuracy = 100 * evaluate(pruned, test_set)
            macs, parameters = _counts(pruned, example)
            tuned = 100 * evaluate(fit(pruned, train_set, 1, seed, lr=3e-4), test_set)
            rows.append({"model": kind, "seed": seed, "ratio": ratio,
                         "method": label, "accuracy": accuracy, "tuned": tuned,
                         "macs": macs, "parameters": parameters,
                         "prune_s": prune_s})  # fmt: skip
            print(f"  {ratio:.0%} {label:36s} {accuracy:6.2f} -> {tuned:6.2f} "
                  f"({prune_s:.1f} s)", flush=True)  # fmt: skip
    for row in rows:
        row["drop"] = base - row["accuracy"]
        row["tuned_drop"] = base - row["tuned"]
    return rows


def summary(rows):
    """Mean +- sd over seeds per (model, ratio, method), in the table's order."""
    keys = list(dict.fromkeys((r["model"], r["ratio"], r["method"]) for r in rows))
    out = []
    for key in keys:
        group = [r for r in rows if (r["model"], r["ratio"], r["method"]) == key]
        stats = {}
        for name in ("accuracy", "drop", "tuned", "tuned_drop"):
            values = [r[name] for r in group]
            stats[name] = (statistics.mean(values), statistics.pstdev(values))
        out.append({"model": key[0], "ratio": key[1], "method": key[2],
                    "runs": len(group), "macs": group[0]["macs"],
                    "parameters": group[0]["parameters"], **stats})  # fmt: skip
    return out


def _best(summaries, model, ratio, name):
    cells = [s for s in summaries if s["model"] == model and s["ratio"] == ratio]
    return min(s[name][0] for s in cells)


def markdown(meta, summaries):
    lines = [
        f"Measured {meta['date']} on {meta['machine']}: {meta['dataset']}, "
        f"{meta['train_size']} training images, models trained {meta['epochs']} "
        f"epochs, {meta['seeds']} seeds (initialisation, order, calibration "
        f"images), activations and gradients from {meta['calib']} training "
        "images; fine-tuning: one epoch, Adam 3e-4. Drops in points against the "
        "unpruned model of the same seed; bold: the smallest drop of its column "
        "and block.",
        "",
        "| model | removed | method | accuracy % | drop | drop after 1 epoch "
        "| parameters | MMACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        cells = []
        for name in ("drop", "tuned_drop"):
            mean, sd = s[name]
            text = f"{mean:.2f} +- {sd:.2f}"
            if s["ratio"] and mean == _best(summaries, s["model"], s["ratio"], name):
                text = f"**{text}**"
            cells.append(text)
        acc, acc_sd = s["accuracy"]
        lines.append(
            f"| {s['model']} | {s['ratio']:.0%} | {s['method']} | {acc:.2f} +- "
            f"{acc_sd:.2f} | {cells[0]} | {cells[1]} | {s['parameters']} | "
            f"{s['macs'] / 1e6:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summaries, path):
    """Accuracy drop per method: a column per model, a row before / after tuning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(s["model"] for s in summaries))
    methods = [label for label, _ in METHODS]
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 7.8),
                             squeeze=False)  # fmt: skip
    width = 0.8 / len(methods)
    for col, model in enumerate(models):
        for row, (name, title) in enumerate(
            (("drop", "no fine-tuning"), ("tuned_drop", "after 1 epoch"))
        ):
            ax = axes[row][col]
            for k, method in enumerate(methods):
                cells = [s for s in summaries if s["model"] == model
                         and s["method"] == method]  # fmt: skip
                x = np.arange(len(cells)) + (k - len(methods) / 2 + 0.5) * width
                means, sds = zip(*(c[name] for c in cells), strict=True)
                ax.bar(x, means, width, yerr=sds, color=f"C{k}", label=method)
            ax.set_xticks(range(len(RATIOS)), [f"{r:.0%} removed" for r in RATIOS])
            ax.set_ylabel("accuracy drop (points)")
            ax.axhline(0, color="black", linewidth=0.5)
            ax.set_title(f"{model}, {title}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet,cnn")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--calib", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set, test_set, info = load_dataset("auto", train_size=args.train_size)
    print(f"{info['name']}: {len(train_set)} train / {len(test_set)} test",
          flush=True)  # fmt: skip
    rows = [
        row
        for kind in args.models.split(",")
        for seed in range(args.seeds)
        for row in seed_rows(kind, info, train_set, test_set, args, seed)
    ]
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores ({platform.machine()})",
        "dataset": info["name"],
        "train_size": len(train_set),
        "epochs": args.epochs,
        "calib": args.calib,
        "seeds": args.seeds,
        "threads": args.threads,
        "torch": torch.__version__,
        "torch_pruning": tp.__version__,
    }
    summaries = summary(rows)
    table = markdown(meta, summaries)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "prune.json").write_text(
            json.dumps({"meta": meta, "rows": rows, "summary": summaries}, indent=2)
        )
        plot(summaries, args.out / "prune.png")
        update_page(args.out.parent / "pruning.md", "prune-table", table)
        print(f"wrote {args.out}/prune.json, prune.png")
    return summaries


if __name__ == "__main__":
    main()
