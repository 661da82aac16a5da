"""Run reports: the summary table, ``report.json`` and the PNG plots."""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path

__all__ = ["summarize", "write_report"]


def summarize(runs):
    """One row per selector: means and standard deviations over the seeds."""
    rows = []
    for selector in dict.fromkeys(r["selector"] for r in runs):
        mine = [r for r in runs if r["selector"] == selector]
        acc = [r["test_accuracy"] for r in mine]
        wall = [r["wall_time_s"] for r in mine]
        sel = [r["selection_time_s"] for r in mine]
        rows.append(
            {
                "selector": selector,
                "seeds": len(mine),
                "fraction_achieved": statistics.mean(
                    r["fraction_achieved"] for r in mine
                ),
                "test_accuracy_mean": statistics.mean(acc),
                "test_accuracy_std": statistics.pstdev(acc),
                "wall_time_s": statistics.mean(wall),
                "selection_share": sum(sel) / max(sum(wall), 1e-12),
                "energy_j": _mean_or_none([r["energy_j"] for r in mine]),
                "energy_source": mine[0]["energy_source"],
            }
        )
    return rows


def _mean_or_none(values):
    """The mean, or None when any value is missing (not measured)."""
    return None if any(v is None for v in values) else statistics.mean(values)


def format_table(rows):
    """The summary as aligned text."""
    head = (
        f"{'selector':20s} {'fraction':>8s} {'test accuracy %':>17s} "
        f"{'wall s':>8s} {'selection':>9s} {'energy J':>9s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        energy = "n/m" if r["energy_j"] is None else f"{r['energy_j']:.0f}"
        acc = f"{100 * r['test_accuracy_mean']:.2f}"
        if r["seeds"] > 1:
            acc += f" +- {100 * r['test_accuracy_std']:.2f}"
        lines.append(
            f"{r['selector']:20s} {r['fraction_achieved']:8.3f} {acc:>17s} "
            f"{r['wall_time_s']:8.1f} {r['selection_share']:9.1%} {energy:>9s}"
        )
    sources = {r["energy_source"] for r in rows}
    lines.append(f"energy: {', '.join(sorted(sources))}")
    return "\n".join(lines)


def write_report(out, config, runs, *, plots=True):
    """Write ``report.json`` (and the plots) into ``out``; return the summary rows.

    The JSON is written to a temporary file first and renamed, so an
    interrupted write never leaves a truncated report.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    report = {
        "config": config,
        "machine": _machine(),
        "versions": _versions(),
        "summary": summary,
        "runs": runs,
    }
    partial = out / "report.json.partial"
    partial.write_text(json.dumps(report, indent=2))
    partial.replace(out / "report.json")
    if plots:
        _plots(
            out,
            runs,
            chance=100.0 / config["n_classes"] if config.get("n_classes") else None,
        )
    return summary


def _machine():
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def _versions():
    """The versions of the packages a run's figures depend on (None: absent)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("maxvol-kit", "torch", "numpy", "scipy", "scikit-learn", "codecarbon"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def mean_curve(curves):
    """The seeds' ``[(wall time, accuracy), ...]`` curves as one.

    Per epoch (up to the epochs every seed has): mean wall time, mean and sd
    of the accuracy in %.
    """
    epochs = min(len(c) for c in curves)
    t = [statistics.mean(c[e][0] for c in curves) for e in range(epochs)]
    acc = [[100 * c[e][1] for c in curves] for e in range(epochs)]
    return t, [statistics.mean(a) for a in acc], [statistics.pstdev(a) for a in acc]


def _mean_curves(runs):
    """Per selector: mean wall time, mean and sd test accuracy (%) per epoch."""
    return {
        selector: mean_curve(
            [
                [(h["wall_time_s"], h["test_accuracy"]) for h in r["history"]]
                for r in runs
                if r["selector"] == selector
            ]
        )
        for selector in dict.fromkeys(r["selector"] for r in runs)
    }


def _shows_chance(chance, lowest):
    """Whether the chance line goes on the plot: within 20 points of the curves.

    Further below, a line at chance would squeeze every curve into the top of
    the plot; the axis label names the level instead.
    """
    return chance >= lowest - 20


def _plots(out, runs, chance=None):
    """The accuracy plots (bands of one sd over seeds; chance level dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig1, ax1 = plt.subplots(figsize=(6, 4))
    fig2, ax2 = plt.subplots(figsize=(6, 4))
    colours, lowest = {}, math.inf
    for selector, curve in _mean_curves(runs).items():
        t, acc, sd = curve
        base = selector.removesuffix(" (clean)")  # the clean twin: same colour, dashed
        colour = colours.setdefault(base, f"C{len(colours)}")
        dashed = "--" if base != selector else "-"
        style = {"color": colour, "label": selector, "linestyle": dashed}
        low = [a - s for a, s in zip(acc, sd, strict=True)]
        for ax, x in ((ax1, t), (ax2, range(1, len(t) + 1))):
            x = list(x)
            ax.plot(x, acc, marker="o", ms=3, **style)
            if any(sd):  # a band of one sd over the seeds
                high = [a + s for a, s in zip(acc, sd, strict=True)]
                ax.fill_between(x, low, high, color=colour, alpha=0.2)
        lowest = min([lowest, *low])
    ax1.set(
        xlabel="wall time (s, mean over seeds)",
        ylabel="test accuracy (%)",
        title="accuracy vs time (bands: +- 1 sd over seeds)",
    )
    ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy vs epoch")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    if chance is not None and _shows_chance(chance, lowest):
        for ax in (ax1, ax2):
            ax.axhline(chance, color="0.5", linestyle=":", lw=1, label="chance")
    elif chance is not None:  # far below every curve: a line would flatten them
        for ax in (ax1, ax2):
            ax.set_ylabel(f"test accuracy (%; chance {chance:.3g})")
    for fig, ax, name in (
        (fig1, ax1, "accuracy_vs_time.png"),
        (fig2, ax2, "accuracy_vs_epoch.png"),
    ):
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    graft_runs = [r for r in runs if r["selector"].startswith("graft")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in graft_runs:
        ranks = [k for h in r["history"] for k in h.get("ranks", [])]
        ax.plot(ranks, ".", ms=2, label=f"{r['selector']} seed {r['seed']}")
    ax.set(
        xlabel="class or batch of each round (in order)",
        ylabel="rank (directions the selection covers)",
        title="GRAFT rank history",
    )
    if graft_runs:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rank_history.png", dpi=110)
    plt.close(fig)
