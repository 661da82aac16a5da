"""Per-sample gradient compression: FactGraSS against exact gradients + projection.

Peers, in the same process on the same samples, with torch pinned to 2
threads (``--threads``):

- ``FactGraSS``: :class:`graft.FactGraSS` (forward hooks, factor sparse JL
  maps, no full per-sample gradient);
- ``GraSS (exact + SJLT)``: exact per-sample gradients with ``torch.func``
  (``vmap(grad)``, 16 samples at a time) then a sparse JL;
- ``exact + Gaussian``: the same exact gradients, then a dense Gaussian
  projection ``G R / sqrt(k)``. ``R`` (``D x k`` float32: 2.2 to 13 GB here)
  does not fit next to other work, so it is drawn in blocks of 16384 rows
  from a seeded ``torch.Generator`` for every batch, as projectors without
  a custom kernel do; the JSON splits the time into gradients and projection.

Models: an MLP 784-512-256-10 on Fashion-MNIST (synthetic images if the
files are absent), and a pre-norm transformer block (d_model 256, 4 heads,
sequence 32, MLP 1024, mean pooling, 10-class head) on synthetic sequences;
both trained briefly first. Per model and ``proj_dim`` in 1024, 2048 and
4096: throughput (samples/s, median of ``--repeats`` passes over
``--samples`` samples in batches of 64), peak memory (the growth of
``ru_maxrss`` while one batch is compressed, in a fresh process per case:
``tracemalloc`` does not see torch's CPU allocations), and the agreement of
the compressed Gram matrix with the exact one (correlation of off-diagonal
entries, relative Frobenius error; the exact gradients cover all
parameters, FactGraSS the Linear layers only).

    python benchmarks/compress_bench.py [--quick] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _page import update_page
from torch import nn

from graft._features import per_sample_gradients
from graft.grass._compressors import FactGraSS, GraSS
from graft.harness import TransformerBlock, fit, load_mnist_like

PROJ_DIMS = (1024, 2048, 4096)
BATCH = 64
CHUNK = 16
METHODS = ("FactGraSS", "GraSS (exact + SJLT)", "exact + Gaussian")


def build(name):
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(784, 512),
            nn.ReLU(),
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )
    return TransformerBlock()


def data(name, n, seed):
    """``n`` samples: Fashion-MNIST images (MLP) or class-patterned sequences."""
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        try:
            images, labels = load_mnist_like(split="train")
            rows = np.random.default_rng(seed).choice(len(labels), n, replace=False)
            x = torch.as_tensor(
                images[rows].reshape(n, -1) / 255.0, dtype=torch.float32
            )
            return x, torch.as_tensor(labels[rows])
        except FileNotFoundError:
            shape = (784,)
    else:
        shape = (32, 256)
    means = 0.5 * torch.randn(10, *shape, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, 10, (n,), generator=g)
    return means[y] + torch.randn(n, *shape, generator=g), y


def trained(name, steps):
    model = build(name)
    x, y = data(name, steps * 128, seed=1)
    return fit(model, x, y, steps=steps, lr=1e-3, batch_size=128)


def exact_gradients(model, x, y):
    """Exact per-sample gradients (torch.func), CHUNK samples at a time."""
    return torch.cat(
        [
            per_sample_gradients(model, x[i : i + CHUNK], y[i : i + CHUNK])
            for i in range(0, len(y), CHUNK)
        ]
    )


class ExactGaussian:
    """Exact per-sample gradients, then ``G R / sqrt(k)`` with ``R`` in row blocks."""

    def __init__(self, model, proj_dim, seed=0, block_rows=16384):
        self.model, self.proj_dim = model, proj_dim
        self.seed, self.block_rows = seed, block_rows
        self.seconds = {"gradients": 0.0, "projection": 0.0}

    def per_sample_gradients(self, x, y):
        t0 = time.perf_counter()
        G = exact_gradients(self.model, x, y)
        t1 = time.perf_counter()
        gen = torch.Generator().manual_seed(self.seed)
        Z = G.new_zeros(len(y), self.proj_dim)
        for start in range(0, G.shape[1], self.block_rows):
            stop = min(start + self.block_rows, G.shape[1])
            R = torch.randn(stop - start, self.proj_dim, generator=gen)
            Z += G[:, start:stop] @ R
        self.seconds["gradients"] += t1 - t0
        self.seconds["projection"] += time.perf_counter() - t1
        return Z / math.sqrt(self.proj_dim)


def compressor(method, model, k):
    if method == "FactGraSS":
        return FactGraSS(model, proj_dim=k, seed=0)
    if method == "GraSS (exact + SJLT)":
        return GraSS(model, proj_dim=k, seed=0, chunk_size=CHUNK)
    return ExactGaussian(model, k)


def compress(comp, x, y):
    return torch.cat(
        [
            comp.per_sample_gradients(x[i : i + BATCH], y[i : i + BATCH])
            for i in range(0, len(y), BATCH)
        ]
    )


def gram_agreement(Z, exact_gram):
    A, B = (Z @ Z.T).double(), exact_gram
    off = ~torch.eye(len(A), dtype=torch.bool)
    corr = float(np.corrcoef(A[off].numpy(), B[off].numpy())[0, 1])
    return corr, float(torch.linalg.norm(A - B) / torch.linalg.norm(B))


def _status_kb(key):
    """A ``/proc/self/status`` field in kB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_case(name, method, k, threads):
    """Peak growth of the resident set while one batch is compressed (MB).

    The peak is the kernel's high-water mark of this process (``VmHWM``),
    reset to the current resident set just before the call; ``ru_maxrss``
    would not do, as it keeps the parent's peak across ``fork`` + ``exec``.
    """
    torch.set_num_threads(threads)
    model = build(name).eval()
    x, y = data(name, BATCH, seed=2)
    comp = compressor(method, model, k)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
    before = _status_kb("VmRSS")
    comp.per_sample_gradients(x, y)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024}))


def measure_memory(name, method, k, threads):
    command = [sys.executable, __file__, "--memory-case", name, method, str(k)]
    out = subprocess.run(
        [*command, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def bench_model(name, args):
    model = trained(name, args.train_steps)
    x, y = data(name, args.samples, seed=2)
    n_params = sum(p.numel() for p in model.parameters())
    G = exact_gradients(model, x, y)
    exact_gram = (G @ G.T).double()
    del G
    rows = []
    for k in args.proj_dims:
        comps = {m: compressor(m, model, k) for m in METHODS}
        times = {m: [] for m in METHODS}
        outputs = {}
        for _ in range(args.repeats):
            for m, comp in comps.items():  # interleaved: the same load for all
                start = time.perf_counter()
                Z = compress(comp, x, y)
                times[m].append(time.perf_counter() - start)
                outputs.setdefault(m, Z)
        for m in METHODS:
            corr, fro = gram_agreement(outputs[m], exact_gram)
            row = {
                "model": name,
                "n_parameters": n_params,
                "proj_dim": k,
                "method": m,
                "samples_per_s": args.samples / statistics.median(times[m]),
                "seconds": times[m],
                "offdiag_corr": corr,
                "gram_rel_error": fro,
                "peak_mb": measure_memory(name, m, k, args.threads),
            }
            if m == "exact + Gaussian":
                row["seconds_split"] = {
                    s: v / args.repeats for s, v in comps[m].seconds.items()
                }
            rows.append(row)
            print(
                f"{name:5s} k={k:5d} {m:22s} {row['samples_per_s']:9.1f} samples/s "
                f"peak +{row['peak_mb']:7.1f} MB corr {corr:.3f} fro {fro:.3f}",
                flush=True,
            )
        base = next(r for r in rows[-3:] if r["method"] == "exact + Gaussian")
        for r in rows[-3:]:
            r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
    return rows


def markdown(results):
    lines = [
        f"Measured {results['date']} on {results['cpus']} CPU cores shared with other "
        f"work ({results['machine']}), torch {results['torch']} pinned to "
        f"{results['threads']} threads; load average {results['load_before']} before "
        f"and {results['load_after']} after. Median of {results['repeats']} passes "
        f"over {results['samples']} samples in batches of {BATCH}. Peak memory: "
        "growth of the resident set while one batch is compressed, in a fresh "
        "process. "
        "Agreement: with the exact per-sample gradients' Gram matrix over the same "
        "samples.",
        "",
        "| model (parameters) | proj_dim | method | samples/s | speed-up | "
        "peak memory (MB) | off-diagonal corr | Gram rel. error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} ({r['n_parameters']:,}) | {r['proj_dim']} | {r['method']} "
            f"| {r['samples_per_s']:.1f} | {r['speedup']:.1f}x | {r['peak_mb']:.0f} "
            f"| {r['offdiag_corr']:.3f} | {r['gram_rel_error']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results["rows"]))
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 7.5))
    axes = np.asarray(axes).reshape(2, len(models))
    for col, name in enumerate(models):
        for m in METHODS:
            pts = [
                r for r in results["rows"] if r["model"] == name and r["method"] == m
            ]
            ks = [r["proj_dim"] for r in pts]
            axes[0, col].plot(ks, [r["samples_per_s"] for r in pts], "o-", label=m)
            axes[1, col].plot(ks, [r["offdiag_corr"] for r in pts], "o-", label=m)
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(PROJ_DIMS), [str(k) for k in PROJ_DIMS])
            ax.set_xlabel("proj_dim")
        axes[0, col].set_yscale("log")
        axes[0, col].set_ylabel("samples / s (CPU, 2 threads)")
        axes[0, col].set_title(f"{name}: per-sample gradient throughput")
        axes[1, col].set_ylabel("off-diagonal Gram correlation to exact")
        axes[1, col].set_title(f"{name}: inner products kept")
        axes[0, col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 samples, 1 repeat")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="mlp,block")
    parser.add_argument("--proj-dims", default=",".join(map(str, PROJ_DIMS)))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--memory-case", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_case:
        name, method, k = args.memory_case
        return memory_case(name, method, int(k), args.threads)
    if args.quick:
        args.samples, args.repeats, args.train_steps = 64, 1, 5
    args.proj_dims = [int(k) for k in args.proj_dims.split(",")]
    torch.set_num_threads(args.threads)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": args.threads,
        "samples": args.samples,
        "repeats": args.repeats,
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "rows": [],
    }
    for name in args.models.split(","):
        results["rows"] += bench_model(name, args)
    results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(markdown(results))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compress.json").write_text(json.dumps(results, indent=2))
        plot(results, args.out / "compress.png")
        update_page(args.out.parent / "grass.md", "compress-table", markdown(results))
        print(f"wrote {args.out}/compress.json, compress.png")
    return results


if __name__ == "__main__":
    main()
