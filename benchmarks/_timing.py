"""Interleaved timing: every contender once per round, the same machine phases."""

from __future__ import annotations

import time


def interleaved_times(runs, repeat, *, calls=1, sync=None):
    """Seconds per call of each of ``runs`` (name -> callable), ``repeat`` rounds.

    Each round calls every run ``calls`` times in turn, so a shared machine
    whose speed moves by up to 2x within minutes slows all of them alike;
    timed one after the other, two runs could swap places. ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before and after each timing. Returns
    name -> list of ``repeat`` times.
    """
    times = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            if sync is not None:
                sync()
            start = time.perf_counter()
            for _ in range(calls):
                run()
            if sync is not None:
                sync()
            times[name].append((time.perf_counter() - start) / calls)
    return times
