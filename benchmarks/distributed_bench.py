"""Tournament MaxVol on a local Dask cluster: certificate, volume, time, memory.

(a) A 200000 x 32 Gaussian matrix in 8 row blocks, held by the workers:
    ``tournament_maxvol`` against single-machine ``fast_maxvol`` on the whole
    matrix: certified? max|C| over all rows (computed here on the full
    array), log|det| and its ratio to fast_maxvol's, wall time.
(b) A 10,000,000 x 64 float32 Gaussian matrix (2.4 GiB) written to a ``.npy``
    file in blocks with ``np.lib.format.open_memmap``, then
    ``tournament_maxvol(path, client=...)`` on a ``LocalCluster`` of 2 worker
    processes (1 thread each, ``memory_limit="2GiB"``): wall time, and the
    peak resident memory (RSS) of each worker process, sampled every 20 ms
    with psutil from this process (the workers' own memory monitor samples
    less often). max|C| is checked afterwards by a pass over the file here.
    The file is deleted at the end unless ``--keep``.

Both run on the same cluster; the load average of the machine (shared with
other users) is recorded before and after each.

    python benchmarks/distributed_bench.py [--quick] [--dir /tmp] [--keep]
        [--rows 10000000] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
from _page import update_page
from distributed import Client, LocalCluster
from threadpoolctl import threadpool_limits

from maxvol_kit import fast_maxvol, tournament_maxvol

TOL = 1.05

# (a) sends its in-memory matrix to the workers once, on purpose.
warnings.filterwarnings("ignore", message="Sending large graph")


def _load():
    return [round(x, 2) for x in os.getloadavg()]


class PeakRSS:
    """Peak resident set size of some processes, sampled in a thread."""

    def __init__(self, pids, every=0.02):
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(pids, 0)
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, proc in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _worker_pids(client):
    return sorted(client.run(os.getpid).values())


def _rss(pids):
    return [psutil.Process(p).memory_info().rss for p in pids]


def _cpu_s(pids):
    """User + system CPU seconds of the processes so far."""
    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


def _max_abs_c_blockwise(A, idx, rows=500_000):
    """max|C| over all rows of a (memory-mapped) ``A``, in float64, by blocks."""
    S = np.linalg.inv(np.asarray(A[np.sort(idx)], dtype=np.float64))
    best = 0.0
    for start in range(0, A.shape[0], rows):
        block = np.asarray(A[start : start + rows], dtype=np.float64)
        best = max(best, float(np.abs(block @ S).max()))
    return best


def bench_in_memory(client, n, r, blocks):
    """(a): tournament on a Dask array in memory against fast_maxvol."""
    A = np.random.default_rng(0).standard_normal((n, r))
    load_before = _load()
    with threadpool_limits(2):
        t0 = time.perf_counter()
        ref = fast_maxvol(A)
        t_ref = time.perf_counter() - t0
    dA = client.persist(da.from_array(A, chunks=(n // blocks, r)))
    rows = []
    for method in ("rect", "fast"):
        t0 = time.perf_counter()
        res = tournament_maxvol(dA, method=method, client=client)
        wall = time.perf_counter() - t0
        C = A @ np.linalg.inv(A[res.indices])
        rows.append(
            {
                "method": method,
                "wall_s": wall,
                "converged": bool(res.converged),
                "max_abs_c": float(np.abs(C).max()),
                "log_det": res.log_volume,
                "ratio": res.log_volume / ref.log_volume,
                "n_iter": res.n_iter,
                "distinct": int(np.unique(res.indices).size),
            }
        )
    return {
        "shape": [n, r],
        "blocks": blocks,
        "fast_maxvol": {
            "wall_s": t_ref,
            "log_det": ref.log_volume,
            "max_abs_c": float(np.abs(ref.coefficients).max()),
            "threads": 2,
        },
        "tournament": rows,
        "load_before": load_before,
        "load_after": _load(),
    }


def write_npy(path, n, r, rows=500_000):
    """A Gaussian float32 n x r matrix, written block by block."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, r))
    for k, start in enumerate(range(0, n, rows)):
        stop = min(start + rows, n)
        rng = np.random.default_rng(k)
        out[start:stop] = rng.standard_normal((stop - start, r), dtype=np.float32)
    out.flush()
    del out


def bench_from_disk(client, directory, n, r, keep):
    """(b): tournament on a .npy file that the workers read block by block."""
    size = n * r * 4
    free = shutil.disk_usage(directory).free
    if free < 2 * size:
        raise SystemExit(
            f"{directory} has {free / 2**30:.1f} GiB free; (b) needs "
            f"{2 * size / 2**30:.1f} GiB: pass --dir with more room or --rows."
        )
    path = Path(tempfile.mkdtemp(dir=directory, prefix="tournament-")) / "A.npy"
    t0 = time.perf_counter()
    write_npy(path, n, r)
    t_write = time.perf_counter() - t0
    try:
        pids = _worker_pids(client)
        idle = _rss(pids)
        load_before = _load()
        cpu0 = _cpu_s(pids)
        with PeakRSS(pids) as peak:
            t0 = time.perf_counter()
            res = tournament_maxvol(path, client=client)
            wall = time.perf_counter() - t0
        cpu = _cpu_s(pids) - cpu0
        load_after = _load()
        max_c = _max_abs_c_blockwise(np.load(path, mmap_mode="r"), res.indices)
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path.parent)
    return {
        "shape": [n, r],
        "dtype": "float32",
        "file_gib": size / 2**30,
        "write_s": t_write,
        "wall_s": wall,
        "worker_cpu_s": cpu,
        "converged": bool(res.converged),
        "max_abs_c": max_c,
        "log_det": res.log_volume,
        "n_iter": res.n_iter,
        "distinct": int(np.unique(res.indices).size),
        "worker_idle_rss_mib": [x / 2**20 for x in idle],
        "worker_peak_rss_mib": [peak.peak[p] / 2**20 for p in pids],
        "load_before": load_before,
        "load_after": load_after,
    }


def markdown(results):
    a, b = results["in_memory"], results["from_disk"]
    ref = a["fast_maxvol"]
    lines = [
        f"Measured {results['date']} on {results['cpus']} CPU cores shared with other "
        f"users; LocalCluster of {results['workers']} worker processes, 1 thread "
        f"each, memory_limit {results['memory_limit']}; tol = {TOL}. Load average "
        "(1, 5, 15 min) before -> after each run.",
        "",
        f"(a) {a['shape'][0]} x {a['shape'][1]} float64 Gaussian in {a['blocks']} "
        "blocks held by the workers; max|C| over all rows computed on the full "
        f"array. fast_maxvol on the whole matrix (2 threads): log|det| "
        f"{ref['log_det']:.3f}, max|C| {ref['max_abs_c']:.4f}, {ref['wall_s']:.2f} s. "
        f"Load {a['load_before']} -> {a['load_after']}.",
        "",
        "| method | certified | max abs C | log det | ratio to fast_maxvol | "
        "swaps | wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in a["tournament"]:
        lines.append(
            f"| tournament, {t['method']} | {t['converged']} | {t['max_abs_c']:.4f} "
            f"| {t['log_det']:.3f} | {t['ratio']:.4f} | {t['n_iter']} "
            f"| {t['wall_s']:.2f} |"
        )
    peaks = ", ".join(f"{x:.0f}" for x in b["worker_peak_rss_mib"])
    idle = ", ".join(f"{x:.0f}" for x in b["worker_idle_rss_mib"])
    lines += [
        "",
        f"(b) {b['shape'][0]:,} x {b['shape'][1]} {b['dtype']} Gaussian, a "
        f"{b['file_gib']:.2f} GiB .npy file (written in {b['write_s']:.1f} s, so in "
        "the page cache) that the workers read block by block; peak RSS of each "
        "worker process sampled every 20 ms with psutil; CPU: user + system "
        "seconds of both workers during the run (wall time over CPU / 2 shows the "
        "share of the 2 cores the run got). Load "
        f"{b['load_before']} -> {b['load_after']}.",
        "",
        "| certified | max abs C (all rows) | log det | swaps | wall (s) | "
        "workers' CPU (s) | worker peak RSS (MiB) | worker idle RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {b['converged']} | {b['max_abs_c']:.4f} | {b['log_det']:.3f} "
        f"| {b['n_iter']} | {b['wall_s']:.1f} | {b['worker_cpu_s']:.1f} | {peaks} "
        f"| {idle} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="(b) with 1e6 rows")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = 1_000_000 if args.quick else args.rows
    workers, memory_limit = 2, "2GiB"
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        in_memory = bench_in_memory(client, 200_000, 32, 8)
        from_disk = bench_from_disk(client, args.dir, rows, 64, args.keep)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "workers": workers,
        "memory_limit": memory_limit,
        "in_memory": in_memory,
        "from_disk": from_disk,
    }
    table = markdown(results)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "distributed.json").write_text(json.dumps(results, indent=2))
        update_page(args.out.parent / "scale-out.md", "distributed-table", table)
        print(f"wrote {args.out}/distributed.json and the table in scale-out.md")


if __name__ == "__main__":
    main()
