"""Named selectors the benchmarks compare beyond what ``graft run`` offers.

The per-batch GRAFT variants (sampling rule, pool, features, coordinates,
stratification, ...) and the SAGE variants were measured against random
subsets and the record-based GRAFT round in docs/benchmarks.md and
docs/sage.md and lost, so they are not ``graft run`` selectors; the tables
that show them are rebuilt from here. ``register(name, make)`` lets
``graft.harness.cli.run_one`` build any of them by name.
"""

from __future__ import annotations

import argparse

from _batch_graft import BatchGraftSelector

from graft import SageSelector
from graft.harness import cli

__all__ = ["args_for", "register"]


def register(name, make):
    """``run_one(args, name, ...)`` builds ``make(args)`` from now on."""
    original = cli._selector

    def selector(arm, args):
        return make(args) if arm == name else original(arm, args)

    cli._selector = selector


# A variant's "min_fraction" is a share of --fraction; "warm_start" is the
# wrapper's (see args_for).
_GREEDY = {"sampling": "greedy", "pool": None}
GRAFT_VARIANTS = {
    "graft-batch": {},  # per batch: volume sampling in a pool of 2x budget
    "graft-volume": {"sampling": "volume", "pool": None},
    "graft-greedy": _GREEDY,
    "graft-rank": {**_GREEDY, "min_fraction": 0.5},  # the rank rule may stop early
    "graft-weighted": {**_GREEDY, "weighted": True},
    "graft-gradient": {**_GREEDY, "features": "gradient"},
    "graft-mixed": {**_GREEDY, "features": "mixed"},
    "graft-u": {**_GREEDY, "coordinates": "u"},
    "graft-typ": {**_GREEDY, "typicality": 1.0},
    "graft-strat": {**_GREEDY, "stratify": True},
    "graft-kernel": {
        **_GREEDY,
        "features": "kernel",
        "stratify": True,
        "typicality": 1.0,
    },
    "graft-half-random": {**_GREEDY, "stratify": True, "random_share": 0.5},
    "graft-volume-strat": {"sampling": "volume", "stratify": True, "pool": None},
    "graft-pool": {"sampling": "volume", "pool": 2},
    "graft-warm": {"sampling": "volume", "pool": None, "warm_start": 1},
}
SAGE_VARIANTS = {
    "sage-top": {"pick": "top"},
    "sage-top-overall": {"pick": "top", "stratify": False},
}


def _graft_variant(options):
    def make(args):
        opts = dict(options)
        opts.pop("warm_start", None)  # the wrapper's: see args_for
        if "min_fraction" in opts:
            opts["min_fraction"] *= args.fraction
        return BatchGraftSelector(args.fraction, eps=args.eps, **opts)

    return make


def _sage_variant(options):
    return lambda args: SageSelector(args.fraction, **options)


def args_for(name, args):
    """``args`` with the variant's wrapper options (``warm_start``) applied."""
    warm = GRAFT_VARIANTS.get(name, {}).get("warm_start")
    if warm is None:
        return args
    return argparse.Namespace(**{**vars(args), "warm_start": warm})


for _name, _options in GRAFT_VARIANTS.items():
    register(_name, _graft_variant(_options))
for _name, _options in SAGE_VARIANTS.items():
    register(_name, _sage_variant(_options))
