"""One code path, several backends: NumPy against torch, batched against a loop.

In one process, with NumPy's BLAS and torch pinned to the same thread count:

1. ``fast_maxvol``, ``maxvol`` and ``rect_maxvol`` (K = 2r) on the same
   Gaussian float64 100000 x 256 matrix as a NumPy array and as a torch CPU
   tensor: median time of ``--repeat`` interleaved runs and the torch / NumPy
   ratio.
2. ``maxvol_batched`` on 256 problems of 128 x 32 against a Python loop of
   ``fast_maxvol`` calls, on torch CPU and NumPy, with the share of problems
   that are dominant (max|C| <= 1.05).
3. With a CUDA device (torch or CuPy): ``fast_maxvol`` on 1,000,000 x 256 and
   ``maxvol_batched`` on 512 problems of 128 x 32 against the CPU.

    python benchmarks/backend_bench.py [--quick] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from _page import update_page
from _timing import interleaved_times
from threadpoolctl import threadpool_limits

import maxvol_kit
from maxvol_kit import fast_maxvol, maxvol, maxvol_batched, rect_maxvol


def _median_times(runs, repeat, sync=None):
    """The median time of each of ``runs``, timed interleaved."""
    times = interleaved_times(dict(enumerate(runs)), repeat, sync=sync)
    return [statistics.median(t) for t in times.values()]


def single_matrix(torch, n, r, repeat):
    """NumPy and torch CPU on the same matrix; rows of the table."""
    A = np.random.default_rng(0).standard_normal((n, r))
    T = torch.asarray(A)
    methods = {
        "fast_maxvol": fast_maxvol,
        "maxvol": maxvol,
        "rect_maxvol (K=2r)": lambda X: rect_maxvol(X, n_rows=2 * r),
    }
    rows = []
    for name, run in methods.items():
        t_np, t_torch = _median_times(
            [lambda run=run: run(A), lambda run=run: run(T)], repeat
        )
        same = np.array_equal(np.asarray(run(A).indices), run(T).indices.numpy())
        rows.append(
            {
                "case": f"{name} {n}x{r}",
                "numpy_s": t_np,
                "torch_cpu_s": t_torch,
                "torch_over_numpy": t_torch / t_np,
                "same_rows": same,
            }
        )
        print(_fmt(rows[-1]), flush=True)
    return rows


def batched(torch, b, n, r, repeat):
    """maxvol_batched against a loop of fast_maxvol calls, torch CPU and NumPy."""
    A = np.random.default_rng(1).standard_normal((b, n, r))
    rows = []
    cases = (
        ("torch cpu", torch.asarray(A)),
        ("torch cpu float32", torch.asarray(A, dtype=torch.float32)),
        ("numpy", A),
    )
    for label, X in cases:
        t_batch, t_loop = _median_times(
            [
                lambda X=X: maxvol_batched(X),
                lambda X=X: [fast_maxvol(X[k]) for k in range(b)],
            ],
            repeat,
        )
        res = maxvol_batched(X)
        dominant = float(np.mean(np.asarray(res.converged)))
        rows.append(
            {
                "case": f"maxvol_batched {b}x{n}x{r} ({label})",
                "batched_s": t_batch,
                "loop_s": t_loop,
                "speedup": t_loop / t_batch,
                "dominant_share": dominant,
            }
        )
        print(_fmt(rows[-1]), flush=True)
    return rows


def gpu(torch, repeat):
    """The GPU goals, when a CUDA device is present."""
    if not torch.cuda.is_available():
        print("no CUDA device: GPU rows skipped")
        return []
    sync = torch.cuda.synchronize
    rows = []
    A = torch.randn(1_000_000, 256, dtype=torch.float64, device="cuda")
    fast_maxvol(A)
    rows.append(
        {
            "case": "fast_maxvol 1000000x256 (torch cuda)",
            "seconds": _median_times([lambda: fast_maxvol(A)], repeat, sync)[0],
        }
    )
    S = torch.randn(512, 128, 32, dtype=torch.float64, device="cuda")
    maxvol_batched(S)
    rows.append(
        {
            "case": "maxvol_batched 512x128x32 (torch cuda)",
            "seconds": _median_times([lambda: maxvol_batched(S)], repeat, sync)[0],
        }
    )
    for row in rows:
        print(_fmt(row), flush=True)
    return rows


def _fmt(row):
    return "  ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
    )


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, r = (20_000, 64) if args.quick else (100_000, 256)
    with threadpool_limits(args.threads):
        results = {
            "versions": {
                "maxvol_kit": maxvol_kit.__version__,
                "numpy": np.__version__,
                "torch": torch.__version__,
            },
            "threads": args.threads,
            "repeat": args.repeat,
            "date": time.strftime("%Y-%m-%d"),
            "single": single_matrix(torch, n, r, args.repeat),
            "batched": batched(torch, 256, 128, 32, args.repeat),
            "gpu": gpu(torch, args.repeat),
        }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "backend_results.json"
        path.write_text(json.dumps(results, indent=2))
        update_page(args.out.parent / "benchmarks.md", "backend-table", table(results))
        print(f"wrote {path}")
    return results


def table(results):
    """The Markdown tables of the docs page."""
    lines = [
        f"Measured {results['date']}, {results['threads']} threads for NumPy's BLAS "
        f"and torch, median of {results['repeat']} interleaved runs; torch "
        f"{results['versions']['torch']}, NumPy {results['versions']['numpy']}.",
        "",
        "| case | NumPy (s) | torch CPU (s) | torch / NumPy | same rows |",
        "|---|---|---|---|---|",
    ]
    for row in results["single"]:
        lines.append(
            f"| {row['case']} | {row['numpy_s']:.3f} | {row['torch_cpu_s']:.3f} "
            f"| {row['torch_over_numpy']:.2f} | {row['same_rows']} |"
        )
    lines += [
        "",
        "| case | batched (s) | loop of fast_maxvol (s) | speed-up | dominant |",
        "|---|---|---|---|---|",
    ]
    for row in results["batched"]:
        lines.append(
            f"| {row['case']} | {row['batched_s']:.3f} | {row['loop_s']:.3f} "
            f"| {row['speedup']:.1f}x | {row['dominant_share']:.0%} |"
        )
    if results["gpu"]:
        lines += ["", "| GPU case | seconds |", "|---|---|"]
        lines += [f"| {row['case']} | {row['seconds']:.4f} |" for row in results["gpu"]]
    else:
        lines += [
            "",
            "No CUDA device on the machine of this run: GPU rows not measured.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
