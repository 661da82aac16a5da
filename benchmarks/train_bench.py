"""Training on a fraction of Fashion-MNIST: GRAFT variants against random subsets.

Small CNN (``graft.harness._models``), Adam 1e-3, batch 128, the same epochs for every
run; for each fraction and each selection mode (a round every
``--refresh-every`` epochs, or online in every batch), random subsets chosen
as often and the GRAFT variants, against full data; ``--seeds`` seeds each.
Reports the test accuracy (mean +- std), the achieved fraction, the wall time
as a ratio of full-data training, and the share of GRAFT's time spent
selecting; writes ``train_results.json``, ``train_accuracy.png`` and the table
in ``docs/benchmarks.md``.

    python benchmarks/train_bench.py [--train-size 20000] [--epochs 10] [--seeds 3]
                                     [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from _page import update_page
from _variants import args_for

from graft.harness import build_parser, load_dataset, run_one

VARIANTS = (
    "random",
    "graft-volume",
    "graft-half-random",
    "graft-greedy",
    "graft-rank",
    "graft-weighted",
    "graft-gradient",
    "graft-mixed",
    "graft-u",
    "graft-strat",
    "graft-kernel",
    "graft-pool",
    "graft-warm",
)
ONLINE_VARIANTS = ("random", "graft-volume", "graft-greedy")


def _args(fraction, mode, epochs, refresh_every):
    return build_parser().parse_args(
        [
            "run",
            "--model",
            "cnn",
            "--fraction",
            str(fraction),
            "--mode",
            mode,
            "--epochs",
            str(epochs),
            "--refresh-every",
            str(refresh_every),
            "--lr",
            "0.001",  # the rate its published table was measured at
            "--quiet",
        ]
    )


def bench(
    train_size, epochs, seeds, fractions, modes, refresh_every, variants, online, full
):
    """All runs; one summary row per (fraction, mode, selector)."""
    train, test, info = load_dataset("fashion-mnist", train_size=train_size)
    rows, runs = [], []

    def log(*_):
        pass

    def summarize(fraction, mode, name, results):
        acc = [100 * r["test_accuracy"] for r in results]
        row = {
            "fraction": fraction,
            "mode": mode,
            "selector": name,
            "accuracy_mean": statistics.mean(acc),
            "accuracy_std": statistics.pstdev(acc),
            "fraction_achieved": statistics.mean(
                r["fraction_achieved"] for r in results
            ),
            "wall_time_s": statistics.mean(r["wall_time_s"] for r in results),
            "selection_share": sum(r["selection_time_s"] for r in results)
            / sum(r["wall_time_s"] for r in results),
        }
        rows.append(row)
        print(
            f"{fraction:4} {mode:8s} {name:15s} {row['accuracy_mean']:.2f} +- "
            f"{row['accuracy_std']:.2f}  fraction {row['fraction_achieved']:.3f}  "
            f"{row['wall_time_s']:.1f} s  selection {row['selection_share']:.1%}",
            flush=True,
        )

    if full:
        full_args = _args(1.0, "refresh", epochs, refresh_every)
        results = [
            run_one(full_args, "full", s, train, test, info, lambda *a: None)
            for s in range(seeds)
        ]
        runs += results
        summarize(1.0, "-", "full", results)
    for fraction in fractions:
        for mode in modes:
            args = _args(fraction, mode, epochs, refresh_every)
            for name in variants if mode == "refresh" else online:
                results = [
                    run_one(args_for(name, args), name, s, train, test, info, log)
                    for s in range(seeds)
                ]
                for r in results:
                    r.update(fraction=fraction, mode=mode)
                runs += results
                summarize(fraction, mode, name, results)
    for row in rows:
        row["time_vs_full"] = (
            row["wall_time_s"] / rows[0]["wall_time_s"] if full else None
        )
    return rows, runs


def _ratio(value):
    return "-" if value is None else f"{value:.2f}"


def markdown(meta, rows):
    lines = [
        f"Measured {meta['date']}: Fashion-MNIST, {meta['train_size']} training "
        f"rows, small CNN, {meta['epochs']} epochs, rounds every "
        f"{meta['refresh_every']} epochs (refresh mode), {meta['seeds']} seeds; "
        f"{meta['machine']}.",
        "",
        "| fraction | mode | selector | test accuracy % | fraction achieved "
        "| wall time vs full | selection share |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fraction']} | {r['mode']} | {r['selector']} "
            f"| {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} "
            f"| {r['fraction_achieved']:.3f} | {_ratio(r['time_vs_full'])} "
            f"| {r['selection_share']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path):
    """One panel per (fraction, mode): each selector's accuracy, with random's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = rows[0]
    panels = sorted({(r["fraction"], r["mode"]) for r in rows[1:]})
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 5.5), squeeze=False
    )
    for ax, (fraction, mode) in zip(axes[0], panels, strict=True):
        pts = sorted(
            (r for r in rows if (r["fraction"], r["mode"]) == (fraction, mode)),
            key=lambda r: r["accuracy_mean"],
        )
        ax.errorbar(
            [r["accuracy_mean"] for r in pts],
            range(len(pts)),
            xerr=[r["accuracy_std"] for r in pts],
            fmt="o",
            capsize=3,
        )
        for r in pts:
            if r["selector"] == "random":
                ax.axvline(r["accuracy_mean"], color="tab:red", ls=":", label="random")
        ax.axvline(full["accuracy_mean"], color="gray", ls="--", label="full data")
        ax.set_yticks(range(len(pts)), [r["selector"] for r in pts], fontsize=8)
        ax.set(xlabel="test accuracy (%)", title=f"fraction {fraction}, {mode}")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Fashion-MNIST, small CNN: mean +- std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--refresh-every", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fractions", default="0.1,0.3")
    parser.add_argument("--modes", default="refresh,online")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--online-variants", default=",".join(ONLINE_VARIANTS))
    parser.add_argument(
        "--table",
        default="train-table",
        help="marker of the table in the page, and the name of the result files",
    )
    parser.add_argument(
        "--page", type=Path, default=None, help="default: benchmarks.md"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-full", action="store_true", help="skip the full-data runs (no time ratio)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",")]
    import torch

    torch.set_num_threads(args.threads)
    rows, runs = bench(
        args.train_size,
        args.epochs,
        args.seeds,
        fractions,
        args.modes.split(","),
        args.refresh_every,
        args.variants.split(","),
        args.online_variants.split(","),
        not args.no_full,
    )
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "train_size": args.train_size,
        "epochs": args.epochs,
        "refresh_every": args.refresh_every,
        "seeds": args.seeds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "train" if args.table == "train-table" else args.table
        (args.out / f"{stem}_results.json").write_text(
            json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=2)
        )
        plot(rows, args.out / f"{stem}_accuracy.png")
        page = args.page or args.out.parent / "benchmarks.md"
        update_page(page, args.table, markdown(meta, rows))
    return rows


if __name__ == "__main__":
    main()
