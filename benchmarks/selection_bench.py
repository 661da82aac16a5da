"""When does selection beat random? Full data, random, InfoBatch and GRAFT per regime.

For each training-set regime (clean; near-duplicates; symmetric label noise;
a long tail, all from ``graft.harness._data.corrupt`` with seed 0, the test set clean
and balanced) and each arm, ``--seeds`` runs of the ``graft run`` protocol:
the same model from the same initialisation, Adam with a cosine learning
rate over the arm's own epochs, a selection round every epoch. Arms: full
data, full data for ``fraction x epochs`` epochs (``full-short``, the
equal-time full run), random subsets redrawn every epoch, InfoBatch
(prune_ratio 0.5, delta 0.875) and GRAFT's default (a round from the record).

Reports per regime and arm: final test accuracy (mean +- sd over seeds), the
accuracy at GRAFT's wall time (the last epoch each run finished by then),
wall time, the share of it spent selecting, and the wall time to reach full
data's final accuracy minus 0.5 point (as a ratio of full data's). Writes
``selection_results.json``, ``selection.png`` and the table in
``docs/selection.md``.

    python benchmarks/selection_bench.py [--model mlp] [--epochs 8] [--seeds 3]
                                         [--train-size N] [--out docs/benchmarks]

With ``--lr-grid 0.001,0.002,...`` it fits the peak learning rate instead:
the final test accuracy of each arm (``--arms``, default full data) at each
rate in each regime, a table of them (``graft run``'s default ``--lr`` is the
rate that table favours).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
from pathlib import Path

import numpy as np
import torch
from _page import update_page
from _variants import register

from graft import GraftSelector, InfoBatchSelector
from graft.harness import build_parser, load_dataset, run_one
from graft.harness._report import mean_curve
from graft.selection._rounds import _class_round, graft_round


class DiversePruneSelector:
    """InfoBatch with the kept well-learned samples chosen for diversity.

    As :class:`graft.InfoBatchSelector`, but in each class the ``1 -
    prune_ratio`` share of the well-learned samples that stay is drawn like
    GRAFT's round (Fast MaxVol rows of the principal embedding directions,
    then leverage mixed with uniform), weighted by inverse inclusion
    probability instead of ``1 / (1 - prune_ratio)``. Benchmark only: it
    stays here unless it beats InfoBatch.
    """

    name = "infobatch-diverse"
    wants_embeddings = True
    layer = None
    rounds_every_epoch = True
    reads = "record"

    def __init__(self, epochs, prune_ratio=0.5, delta=0.875, eps=0.1):
        self.base = InfoBatchSelector(epochs, prune_ratio=prune_ratio, delta=delta)
        self.fraction, self.eps = self.base.fraction, eps

    def select_round(self, this):
        base, record, epoch = self.base, this.record, this.epoch
        generator = this.generator
        if (
            epoch >= base.delta * base.epochs
            or record.loss is None
            or record.embedding is None
            or record.target is None
        ):
            return base.select_round(this)
        loss = record.loss.cpu()
        seen = torch.isfinite(loss)
        if not bool(seen.any()):
            return base.select_round(this)
        well = (seen & (loss < loss[seen].mean())).numpy()
        labels = record.target.cpu().numpy()
        H = record.embedding.cpu().numpy()
        kept = [np.flatnonzero(~well)]
        weights = [np.ones(len(kept[0]))]
        for c in np.unique(labels[well]):
            rows = np.flatnonzero(well & (labels == c))
            k = round((1 - base.prune_ratio) * len(rows))
            if k == 0:
                continue
            if k >= len(rows) or len(rows) < 4:
                kept.append(rows)
                weights.append(np.ones(len(rows)))
                continue
            local, p, _ = _class_round(H[rows], k, self.eps, 0.5, generator)
            kept.append(rows[np.asarray(local)])
            weights.append(1.0 / np.asarray(p))
        kept, weights = np.concatenate(kept), np.concatenate(weights)
        return torch.as_tensor(kept), torch.as_tensor(weights).float(), [len(kept)]


class ProportionalGraftSelector(GraftSelector):
    """GRAFT's round with budgets by class size and unbiased weights.

    The allocation GRAFT's round had before the loss-mass rule; benchmark
    only, to show what the rule adds.
    """

    def select_round(self, round):
        return graft_round(
            round.record,
            self.fraction,
            self.eps,
            round.generator,
            allocation="size",
            weighting="unbiased",
        )


class NoMaxVolGraftSelector(GraftSelector):
    """GRAFT's round without the Fast MaxVol rows: all of the budget is drawn."""

    def select_round(self, round):
        return graft_round(
            round.record, self.fraction, self.eps, round.generator, maxvol_rows=False
        )


register("infobatch-diverse", lambda args: DiversePruneSelector(args.epochs))
register("graft-no-maxvol", lambda args: NoMaxVolGraftSelector(args.fraction))
register("graft-full-rank", lambda args: GraftSelector(args.fraction, eps=0.0))
register("graft-proportional", lambda args: ProportionalGraftSelector(args.fraction))

REGIMES = {
    "clean": {},
    "duplicates 0.5": {"duplicates": 0.5},
    "label noise 0.3": {"label_noise": 0.3},
    "imbalance 10": {"imbalance": 10.0},
}
ARMS = (
    "full",
    "full-short",
    "random",
    "infobatch",
    "infobatch-diverse",
    "graft-proportional",
    "graft",
)


def _args(opts, lr=None):
    argv = [
        "run",
        "--model",
        opts.model,
        "--epochs",
        str(opts.epochs),
        "--fraction",
        str(opts.fraction),
        "--quiet",
    ]
    lr = lr if lr is not None else opts.lr
    if lr is not None:
        argv += ["--lr", str(lr)]
    return build_parser().parse_args(argv)


def _at_time(run, t):
    """Test accuracy of the last epoch finished by wall time ``t`` (0 if none)."""
    done = [h["test_accuracy"] for h in run["history"] if h["wall_time_s"] <= t]
    return done[-1] if done else 0.0


def _time_to(run, target):
    """Wall time at which the run first reached ``target`` accuracy (inf if never)."""
    for h in run["history"]:
        if h["test_accuracy"] >= target:
            return h["wall_time_s"]
    return math.inf


def regime_rows(opts, regime):
    """All arms and seeds on one regime: per-arm summary rows."""
    train, test, info = load_dataset(
        opts.dataset, train_size=opts.train_size, **REGIMES[regime]
    )
    args = _args(opts)
    arms = opts.arms.split(",")
    runs = {arm: [] for arm in arms}
    for seed in range(opts.seeds):
        for arm in arms:
            run = run_one(args, arm, seed, train, test, info, lambda *a: None)
            runs[arm].append(run)
            print(
                f"{regime:16s} {arm:10s} seed {seed}: "
                f"{100 * run['test_accuracy']:.2f}% in {run['wall_time_s']:.1f} s",
                flush=True,
            )
    # GRAFT's time and full data's accuracy and time, where those arms ran.
    reference = runs.get("graft") or next(iter(runs.values()))
    budget = statistics.median(r["wall_time_s"] for r in reference)
    full = runs.get("full")
    full_final = statistics.mean(r["test_accuracy"] for r in full) if full else 2.0
    full_time = statistics.mean(r["wall_time_s"] for r in full) if full else 1.0
    rows = []
    for arm, mine in runs.items():
        acc = [r["test_accuracy"] for r in mine]
        at_budget = [_at_time(r, budget) for r in mine]
        reach = statistics.median(_time_to(r, full_final - 0.005) for r in mine)
        rows.append(
            {
                "regime": regime,
                "arm": arm,
                "n_train": len(train),
                "accuracy_mean": statistics.mean(acc),
                "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "accuracy_at_graft_time": statistics.mean(at_budget),
                "accuracy_at_graft_time_sd": (
                    statistics.stdev(at_budget) if len(at_budget) > 1 else 0.0
                ),
                "wall_time_s": statistics.mean(r["wall_time_s"] for r in mine),
                "selection_share": sum(r["selection_time_s"] for r in mine)
                / sum(r["wall_time_s"] for r in mine),
                "fraction": statistics.mean(r["fraction_achieved"] for r in mine),
                "time_to_full_minus_half_point": reach / full_time,
                "curves": [
                    [(h["wall_time_s"], h["test_accuracy"]) for h in r["history"]]
                    for r in mine
                ],
            }
        )
    return rows


def lr_rows(opts, regime, lrs, arms=("full",)):
    """Each arm's final test accuracy per peak learning rate (``--seeds`` runs each)."""
    train, test, info = load_dataset(
        opts.dataset, train_size=opts.train_size, **REGIMES[regime]
    )
    rows = []
    for arm in arms:
        for lr in lrs:
            args = _args(opts, lr)
            acc = [
                run_one(args, arm, seed, train, test, info, lambda *a: None)[
                    "test_accuracy"
                ]
                for seed in range(opts.seeds)
            ]
            print(
                f"{regime:16s} {arm:10s} lr {lr:g}: {100 * statistics.mean(acc):.2f}%",
                flush=True,
            )
            rows.append({"regime": regime, "arm": arm, "lr": lr, "accuracy": acc})
    return rows


def lr_table(rows, opts):
    """Regimes and arms down, learning rates across; each arm's best mean in bold.

    An arm's best rate is the one with the highest accuracy averaged over the
    regimes (its ``mean`` row, the only row with a bold cell); on a tie, the
    first rate of the grid.
    """
    lrs = list(dict.fromkeys(r["lr"] for r in rows))
    regimes = list(dict.fromkeys(r["regime"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    mean = {
        (r["regime"], r["arm"], r["lr"]): 100 * statistics.mean(r["accuracy"])
        for r in rows
    }
    lines = [
        f"Measured with `python benchmarks/selection_bench.py --lr-grid "
        f"{','.join(f'{lr:g}' for lr in lrs)} --arms {','.join(arms)} --seeds "
        f"{opts.seeds}` ({opts.model}, {opts.epochs} epochs, fraction {opts.fraction}, "
        "cosine schedule, Adam); final test accuracy %, mean over the seeds; in "
        "each arm's mean row over the regimes, its best rate in bold.\n",
        "| regime | arm | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
        "|---|---|" + "---|" * len(lrs),
    ]
    for arm in arms:
        overall = {lr: statistics.mean(mean[g, arm, lr] for g in regimes) for lr in lrs}
        best = max(lrs, key=overall.get)
        for g in [*regimes, "mean"]:
            cells = [overall[lr] if g == "mean" else mean[g, arm, lr] for lr in lrs]
            lines.append(
                f"| {g} | {arm} | "
                + " | ".join(
                    f"**{c:.2f}**" if lr == best and g == "mean" else f"{c:.2f}"
                    for lr, c in zip(lrs, cells, strict=True)
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def table(rows, opts):
    head = (
        f"Measured with `python benchmarks/selection_bench.py --model {opts.model} "
        f"--epochs {opts.epochs} --seeds {opts.seeds}"
        + (f" --train-size {opts.train_size}" if opts.train_size else "")
        + (f" --lr {opts.lr:g}" if opts.lr is not None else "")
        + (f" --arms {opts.arms}" if opts.arms != ",".join(ARMS) else "")
        + (f" --table {opts.table}" if opts.table else "")
        + f"` on {opts.dataset}, fraction {opts.fraction}, {opts.threads} threads, "
        "Adam with "
        f"peak learning rate {_args(opts).lr:g}; mean +- sd over the seeds.\n\n"
        "| regime | arm | data share | test accuracy % | at GRAFT's time % | "
        "wall s | selecting | time to full - 0.5 pt |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        reach = r["time_to_full_minus_half_point"]
        lines.append(
            f"| {r['regime']} | {r['arm']} | {r['fraction']:.2f} | "
            f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_sd']:.2f} | "
            f"{100 * r['accuracy_at_graft_time']:.2f} +- "
            f"{100 * r['accuracy_at_graft_time_sd']:.2f} | {r['wall_time_s']:.1f} | "
            f"{r['selection_share']:.1%} | "
            + ("never" if math.isinf(reach) else f"{reach:.2f}x")
            + " |"
        )
    return head + "\n".join(lines) + "\n"


def plot(rows, path):
    """Accuracy against wall time per regime: each arm's mean, a band of one sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(r["regime"] for r in rows))
    fig, axes = plt.subplots(1, len(regimes), figsize=(4 * len(regimes), 3.6))
    for ax, regime in zip(axes, regimes, strict=True):
        for k, r in enumerate(x for x in rows if x["regime"] == regime):
            t, acc, sd = mean_curve(r["curves"])
            ax.plot(t, acc, "o-", ms=2, lw=1.2, color=f"C{k}", label=r["arm"])
            ax.fill_between(
                t,
                [a - s for a, s in zip(acc, sd, strict=True)],
                [a + s for a, s in zip(acc, sd, strict=True)],
                color=f"C{k}",
                alpha=0.15,
            )
        ax.set(title=regime, xlabel="wall time (s, mean over seeds)")
    axes[0].set_ylabel("test accuracy (%, band: +- 1 sd)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rates(text):
    """``--lr-grid``: comma-separated positive learning rates."""
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        rates = []
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of rates > 0; e.g. --lr-grid 0.001,0.002,0.004"
        )
    if len(set(rates)) < len(rates):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a rate; give each once")
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument(
        "--arms", default=None, help="comma-separated (all; with --lr-grid: full)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (graft run's)"
    )
    parser.add_argument(
        "--lr-grid",
        type=_rates,
        default=None,
        help="comma-separated peak learning rates: a table of the arms' final "
        "accuracy at each",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--table",
        default="",
        help="name of a second table on the docs page (its marker and files)",
    )
    opts = parser.parse_args(argv)
    if opts.lr_grid and (opts.lr is not None or opts.table):
        parser.error(
            "--lr-grid sets the rates and its own table: drop --lr and --table"
        )
    suffix = f"-{opts.table}" if opts.table else ""
    torch.set_num_threads(opts.threads)
    if opts.lr_grid:
        arms = (opts.arms or "full").split(",")
        rows = []
        for regime in opts.regimes.split(","):
            rows.extend(lr_rows(opts, regime, opts.lr_grid, arms))
        text = lr_table(rows, opts)
        print(text)
        if opts.out:
            opts.out.mkdir(parents=True, exist_ok=True)
            (opts.out / "selection_results-lr.json").write_text(
                json.dumps({"rows": rows, **vars(opts)}, indent=1, default=str)
            )
            page = Path(__file__).resolve().parents[1] / "docs" / "selection.md"
            update_page(page, f"selection-table-{opts.model}-lr", text)
        return
    rows = []
    opts.arms = opts.arms or ",".join(ARMS)
    for regime in opts.regimes.split(","):
        rows.extend(regime_rows(opts, regime))
    text = table(rows, opts)
    print(text)
    if opts.out:
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / f"selection_results{suffix}.json").write_text(
            json.dumps(
                {"rows": rows, "python": platform.python_version(), **vars(opts)},
                indent=1,
                default=str,
            )
        )
        plot(rows, opts.out / f"selection{suffix}.png")
        page = Path(__file__).resolve().parents[1] / "docs" / "selection.md"
        update_page(page, f"selection-table-{opts.model}{suffix}", text)


if __name__ == "__main__":
    main()
