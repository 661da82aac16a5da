"""What Graft's loop pieces cost per epoch, against a plain PyTorch loop.

The same MLP (784-256-128-10, Adam) and the same Fashion-MNIST-shaped data
(random, so no files are needed) trained one epoch at a time, in one process:

- ``plain``: ``DataLoader(TensorDataset, batch_size, shuffle=True)`` and
  ``F.cross_entropy(..., reduction="mean")``;
- ``graft full``: ``Graft(selector=None)``: ``graft.dataloader()``,
  ``set_epoch``, per-sample losses and ``graft.update`` (the loss record);
- ``graft record``: a selector that keeps every sample and wants the
  embeddings, between rounds, so the epoch also records the 128-wide
  embedding of every sample through the forward hook;
- ``plain again``: the plain loop once more, a control: its ratio to the
  first is the noise of the machine.

Reports the median epoch time of ``--repeats`` epochs and its ratio to the
plain loop; writes ``loop_results.json`` and the table in
``docs/benchmarks.md``.

    python benchmarks/loop_bench.py [--n 20000] [--repeats 5] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _page import update_page
from torch.utils.data import DataLoader, TensorDataset

from graft import Graft, Selection
from graft.harness import make_model
from graft.selection import batchwise_round


class KeepAll:
    """Every sample of every batch, weight 1, and the embeddings recorded."""

    name = "keep-all"
    fraction = 1.0
    reads = "data"
    wants_embeddings = True
    layer = None
    rounds_every_epoch = False
    select_round = batchwise_round

    def select(self, model, inputs, targets, generator):
        n = len(targets)
        return Selection(torch.arange(n), torch.ones(n), n)


def _data(n):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    )


def _plain(model, opt, data, batch_size):
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)

    def epoch(_):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return epoch


def _graft(model, opt, data, batch_size, selector):
    graft = Graft(
        model, data, selector=selector, batch_size=batch_size, refresh_every=10**6
    )
    loader = graft.dataloader()
    graft.set_epoch(0)  # the round (if any) before the timed epochs

    def epoch(e):
        graft.set_epoch(e + 1)
        for batch in loader:
            x, y = batch.data
            losses = F.cross_entropy(model(x), y, reduction="none")
            loss = graft.update(batch, losses)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return epoch


def run(n, repeats, batch_size):
    data = _data(n)
    arms = {}
    for name in ("plain", "graft full", "graft record", "plain again"):
        torch.manual_seed(0)
        model = make_model("mlp", (1, 28, 28), 10)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        if name.startswith("plain"):
            arms[name] = _plain(model, opt, data, batch_size)
        else:
            selector = KeepAll() if name == "graft record" else None
            arms[name] = _graft(model, opt, data, batch_size, selector)
    times = {name: [] for name in arms}
    for r in range(repeats):  # interleaved, so drift hits every arm alike
        for name, epoch in arms.items():
            start = time.perf_counter()
            epoch(r)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["plain"])
    return [
        {
            "arm": name,
            "median_s": statistics.median(t),
            "ratio": statistics.median(t) / base,
            "times_s": t,
        }
        for name, t in times.items()
    ]


def table(rows, n, repeats, threads):
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}: {n} samples of 1 x 28 x 28, MLP "
        f"784-256-128-10, batch 128, {repeats} epochs per arm (interleaved), "
        f"{threads} thread(s); {platform.machine()}, torch {torch.__version__}.",
        "",
        "| loop | median epoch time | vs plain |",
        "| --- | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['arm']} | {row['median_s']:.3f} s | {row['ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.n, args.repeats, args.batch_size)
    text = table(rows, args.n, args.repeats, args.threads)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "loop_results.json").write_text(json.dumps(rows, indent=1))
        update_page(args.out.parent / "benchmarks.md", "loop-table", text)


if __name__ == "__main__":
    main()
