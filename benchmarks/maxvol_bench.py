"""MaxVol side by side: maxvol_kit against scipy's pivoted QR, teneva and maxvolpy.

Every peer runs in this one process on the same Gaussian float64 matrices with
the BLAS pinned to the same number of threads. For each method: the median
wall time of ``--repeat`` runs (interleaved: every method once per round,
``A.T @ A`` included), the time as a ratio of scipy's column-pivoted
QR of ``A.T`` (LAPACK geqp3, the first r pivots are the greedy-volume rows),
the time as a ratio of ``A.T @ A`` on the same matrix (one BLAS-3 pass,
the limit a MaxVol that reads ``A`` twice can approach), the largest
coefficient ``max|C|`` (for rectangular selections the largest
row norm of ``C = A pinv(A[I])``), the log volume and the peak extra memory
as a multiple of the input size ``n r``.

    python benchmarks/maxvol_bench.py                 # full table
    python benchmarks/maxvol_bench.py --quick         # three small sizes, 3 repeats
    python benchmarks/maxvol_bench.py --sizes 128x32 --threads 1   # one size
    python benchmarks/maxvol_bench.py --out docs/benchmarks   # + JSON, Markdown, PNG
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.linalg
from _page import update_page
from _timing import interleaved_times
from threadpoolctl import threadpool_info, threadpool_limits

import maxvol_kit

FULL_SIZES = [
    (128, 32),
    (10_000, 64),
    (100_000, 64),
    (100_000, 256),
    (1_000_000, 64),
]
QUICK_SIZES = [(128, 32), (10_000, 64), (100_000, 64)]
# Below this many entries a timing is the median per call of CALLS calls (one
# call is too short for the clock and the noise of a shared machine).
PER_CALL_BELOW, CALLS = 50_000, 200
# teneva.maxvol builds the dense n x n permutation of scipy.linalg.lu.
TENEVA_MAX_N = 20_000


def _peers():
    """The methods to compare: name -> (kind, run(A, r) -> selected rows)."""
    methods = {
        "scipy geqp3 (A.T)": ("square", lambda A, r: _geqp3(A, r)),
        "fast_maxvol": ("square", lambda A, r: maxvol_kit.fast_maxvol(A).indices),
        "maxvol (LU start)": ("square", lambda A, r: maxvol_kit.maxvol(A).indices),
        "rect_maxvol (K=2r)": (
            "rect",
            lambda A, r: maxvol_kit.rect_maxvol(A, n_rows=2 * r).indices,
        ),
    }
    try:
        import teneva

        methods["teneva maxvol"] = (
            "square",
            lambda A, r: teneva.maxvol(A, 1.05, 1000)[0],
        )
        methods["teneva maxvol_rect (K=2r)"] = (
            "rect",
            lambda A, r: teneva.maxvol_rect(A, 1.0, r, r, 1.05, 1000)[0],
        )
    except ImportError:
        pass
    try:  # python benchmarks/build_maxvolpy.py builds it (its release no longer does)
        import maxvolpy._maxvol  # noqa: F401 - compiled, not its Python fallback
        from maxvolpy.maxvol import maxvol as mvp_maxvol
        from maxvolpy.maxvol import rect_maxvol as mvp_rect

        methods["maxvolpy maxvol"] = ("square", lambda A, r: mvp_maxvol(A, 1.05)[0])
        methods["maxvolpy rect_maxvol (K=2r)"] = (
            "rect",
            lambda A, r: mvp_rect(A, 1.0, 2 * r, 2 * r)[0],
        )
    except ImportError:
        pass
    return methods


def _geqp3(A, r):
    _, piv = scipy.linalg.qr(A.T, pivoting=True, mode="r", check_finite=False)
    return piv[:r]


def _quality(A, rows):
    """max|C| (square) or max row norm of C (rect), and the log volume."""
    rows = np.asarray(rows)
    sub = A[rows]
    C = A @ np.linalg.pinv(sub)
    if rows.size == A.shape[1]:
        worst = float(np.abs(C).max())
    else:
        rest = np.setdiff1d(np.arange(A.shape[0]), rows)
        worst = float(np.linalg.norm(C[rest], axis=1).max())
    logvol = float(np.log(np.linalg.svd(sub, compute_uv=False)).sum())
    return worst, logvol, int(np.unique(rows).size == rows.size)


def _peak_memory(run, A, r):
    tracemalloc.start()
    try:
        run(A, r)
        return tracemalloc.get_traced_memory()[1] / A.nbytes
    finally:
        tracemalloc.stop()


def _skip(name, n):
    return name.startswith("teneva") and n > TENEVA_MAX_N


def bench(sizes, repeat, seed=0):
    """Run every method on every size; return a list of result rows."""
    rows = []
    methods = _peers()
    for n, r in sizes:
        A = np.random.default_rng(seed).standard_normal((n, r))
        calls = CALLS if n * r < PER_CALL_BELOW else 1
        runs = {name: run for name, (_, run) in methods.items() if not _skip(name, n)}
        times, picked = _round_robin(runs, A, r, repeat, calls)
        limit = statistics.median(times.pop(LIMIT))
        print(
            f"{n:>7}x{r:<4} A.T @ A (the limit): {limit:.3g} s, "
            f"{n * r * r / limit / 1e9:.1f} GFLOP/s",
            flush=True,
        )
        base = statistics.median(times["scipy geqp3 (A.T)"])
        for name, run in runs.items():
            median = statistics.median(times[name])
            worst, logvol, distinct = _quality(A, picked[name])
            rows.append(
                {
                    "n": n,
                    "r": r,
                    "method": name,
                    "kind": methods[name][0],
                    "median_s": median,
                    "ratio_to_geqp3": median / base,
                    "ratio_to_AtA": median / limit,
                    "max_C": worst,
                    "log_volume": logvol,
                    "distinct": bool(distinct),
                    "peak_memory_x_input": _peak_memory(run, A, r),
                }
            )
            print(_format_row(rows[-1]), flush=True)
    return rows


LIMIT = "A.T @ A"


def _round_robin(runs, A, r, repeat, calls):
    """Each method once per round, ``repeat`` rounds: ``(times, picked rows)``.

    ``times[LIMIT]`` holds ``A.T @ A``, timed first in every round.
    """
    picked = {}

    def picking(name, run):
        def call():
            picked[name] = run(A, r)

        return call

    calls_by_name = {name: picking(name, run) for name, run in runs.items()}
    times = interleaved_times(
        {LIMIT: lambda: A.T @ A, **calls_by_name}, repeat, calls=calls
    )
    return times, picked


HEADER = (
    f"{'n x r':>12} {'method':<28} {'median s':>9} {'x geqp3':>8} {'x AtA':>7} "
    f"{'max|C|':>8} {'log vol':>9} {'mem/nr':>7}"
)


def _format_row(row):
    return (
        f"{row['n']:>7}x{row['r']:<4} {row['method']:<28} {row['median_s']:>9.3g} "
        f"{row['ratio_to_geqp3']:>8.3f} {row['ratio_to_AtA']:>7.2f} "
        f"{row['max_C']:>8.3f} {row['log_volume']:>9.2f} "
        f"{row['peak_memory_x_input']:>7.2f}"
    )


def machine():
    """Where and when the table was measured."""
    blas = [
        (i["internal_api"], i.get("version"), i["num_threads"])
        for i in threadpool_info()
    ]
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": sorted(set(blas)),
    }


def write_outputs(rows, meta, out):
    """Write results.json, a Markdown table and a PNG figure into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "maxvol_results.json").write_text(
        json.dumps({"machine": meta, "rows": rows}, indent=2)
    )
    lines = [
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), "
        f"NumPy {meta['numpy']}, SciPy {meta['scipy']}, BLAS threads pinned to "
        f"{meta['threads']}; median of {meta['repeat']} interleaved runs.",
        "",
        "| n x r | method | median time (s) | time / geqp3 | time / A.T A "
        "| max abs C (rect: max row norm) | log volume | peak memory / (n r) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']} x {row['r']} | {row['method']} | {row['median_s']:.3g} "
            f"| {row['ratio_to_geqp3']:.3f} | {row['ratio_to_AtA']:.2f} "
            f"| {row['max_C']:.3f} "
            f"| {row['log_volume']:.2f} | {row['peak_memory_x_input']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "maxvol_table.md").write_text(table)
    update_page(out.parent / "benchmarks.md", "maxvol-table", table)
    _plot(rows, meta, out / "maxvol_times.png")


def _plot(rows, meta, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({(row["n"], row["r"]) for row in rows})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        xs, ys = [], []
        for s, (n, r) in enumerate(sizes):
            match = [x for x in rows if (x["n"], x["r"], x["method"]) == (n, r, method)]
            if match:
                xs.append(s + k * width)
                ys.append(match[0]["median_s"])
        ax.bar(xs, ys, width, label=method)
    ax.set_xticks([s + 0.4 - width / 2 for s in range(len(sizes))])
    ax.set_xticklabels([f"{n} x {r}" for n, r in sizes])
    ax.set_yscale("log")
    ax.set_ylabel("median wall time (s), log scale")
    ax.set_title(
        f"MaxVol on Gaussian float64 matrices ({meta['date']}, {meta['cores']} cores)"
    )
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="three small sizes, 3 repeats"
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per method (5)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (2)")
    parser.add_argument("--out", type=Path, default=None, help="write JSON/MD/PNG here")
    parser.add_argument(
        "--sizes", default=None, help="comma-separated n x r, e.g. 128x32,10000x64"
    )
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.sizes:
        sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    repeat = args.repeat or (3 if args.quick else 5)
    with threadpool_limits(args.threads):
        meta = machine() | {"threads": args.threads, "repeat": repeat}
        print(f"# {meta}")
        print(HEADER)
        rows = bench(sizes, repeat)
    if args.out is not None:
        write_outputs(rows, meta, args.out)
        print(
            f"wrote {args.out}/maxvol_table.md, maxvol_results.json, maxvol_times.png"
        )
    return rows


if __name__ == "__main__":
    main()
