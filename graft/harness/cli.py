"""The ``graft`` command line: ``graft run`` compares selectors on offline data.

    graft run                                  # the main job (< 5 min)
    graft run --dataset digits --imbalance 1 --fraction 0.3 --out runs/d

The main job: an MLP on Fashion-MNIST (digits without it), full data, random
subsets, InfoBatch and GRAFT, 3 seeds, on a long-tailed training set
(imbalance 10) with the same runs on the clean set beside it.

For each selector and seed it trains the same model from the same
initialisation, evaluates the test accuracy after every epoch, and records
the wall time, the time spent selecting, the share of samples that got a
backward pass, and an energy figure; it prints a table and writes
``report.json`` and PNG plots into ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

__all__ = ["main"]

# The flags of `graft run`: (flag, argparse options). Help texts say what the
# value means; argparse adds the default.
_RUN_FLAGS = (
    ("--dataset", {"default": "auto", "choices": ["auto", "digits", "fashion-mnist",
        "mnist"], "help": "auto: Fashion-MNIST if its files are found, else digits"}),
    ("--data-dir", {"default": None, "help": "folder of the IDX files"}),
    ("--data", {"default": None, "help": "your own data instead: a .npz (X, y[, "
        "X_test, y_test]) or .csv (a label column) file, or X.npy,y.npy; features "
        "standardised"}),
    ("--image-folder", {"default": None, "help": "your own images instead: a "
        "folder of class sub-folders (Pillow reads them, values in [0, 1])"}),
    ("--model", {"default": "mlp", "help": "mlp: 256-128 hidden units; cnn: two "
        "conv layers; or module:factory, factory(in_shape, n_classes) -> nn.Module "
        "(module importable, or a .py path)"}),
    ("--selectors", {"default": "full,random,infobatch,graft",
        "help": "comma-separated: full, full-short (full data for fraction x "
        "epochs), random, infobatch, graft, sage"}),
    ("--fraction", {"type": float, "default": 0.3,
        "help": "share of the data a subset selector keeps"}),
    ("--epochs", {"type": int, "default": None,
        "help": "None: 8 on Fashion-MNIST and MNIST, 15 on digits"}),
    ("--seeds", {"type": int, "default": 3, "help": "runs per selector"}),
    ("--mode", {"default": "refresh", "choices": ["refresh", "online"],
        "help": "refresh: selection rounds; online: every batch reduced"}),
    ("--refresh-every", {"type": int, "default": 1,
        "help": "epochs between selection rounds (rounds from the record cost ~0)"}),
    ("--schedule", {"default": "cosine", "choices": ["cosine", "constant"],
        "help": "learning rate over each run's own epochs: cosine decays to ~0"}),
    ("--duplicates", {"type": float, "default": 0.0,
        "help": "share of the training set replaced by near-duplicates"}),
    ("--label-noise", {"type": float, "default": 0.0,
        "help": "share of the training labels flipped to another class"}),
    ("--imbalance", {"type": float, "default": None,
        "help": "largest over smallest training class (a long tail); None: 10 on "
        "the bundled sets (the main job), 1 (as it is) with --data"}),
    ("--no-clean", {"action": "store_true",
        "help": "with a corruption flag, skip the same runs on the clean data"}),
    ("--eps", {"type": float, "default": 0.1,
        "help": "GRAFT's residual target (sets how many directions a class keeps)"}),
    ("--warm-start", {"type": int, "default": 0,
        "help": "epochs on random subsets before the first selection round"}),
    ("--batch-size", {"type": int, "default": 128, "help": "samples per batch"}),
    ("--lr", {"type": float, "default": 4e-3,
        "help": "Adam's peak learning rate (fitted: docs/selection.md)"}),
    ("--train-size", {"type": int, "default": None,
        "help": "random subset of the training set (None: all of it)"}),
    ("--threads", {"type": int, "default": 2, "help": "torch CPU threads"}),
    ("--device", {"default": "cpu", "help": "torch device of training and "
        "selection, e.g. cpu, cuda, cuda:1"}),
    ("--energy", {"default": "auto", "choices": ["auto", "off"],
        "help": "auto: measured with codecarbon if installed, else reported as not "
        "measured"}),
    ("--config", {"default": None, "help": "a TOML file of flags (e.g. epochs = 8, "
        "selectors = \"full,graft\"); flags on the command line win"}),
    ("--out", {"default": "graft-run", "help": "folder of report.json and plots"}),
    ("--overwrite", {"action": "store_true",
        "help": "replace the report already in --out (else: refuse)"}),
    ("--quiet", {"action": "store_true", "help": "no per-epoch lines"}),
)  # fmt: skip


def build_parser():
    """The ``graft`` command line's parser (``graft run`` and its flags).

    Examples
    --------
    >>> from graft.harness import build_parser
    >>> args = build_parser().parse_args(["run", "--epochs", "3"])
    >>> args.command, args.epochs
    ('run', 3)
    """
    parser = argparse.ArgumentParser(prog="graft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="compare selectors on an offline dataset",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, options in _RUN_FLAGS:
        run.add_argument(flag, **options)
    parser.add_argument("--version", action="version", version=_version())
    return parser


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"graft (maxvol-kit) {version('maxvol-kit')}"
    except PackageNotFoundError:  # run from a source tree
        return "graft (maxvol-kit, not installed)"


# Selector names for --selectors. The per-batch GRAFT variants and the SAGE
# variants the benchmarks compare (measured to lose against these) live in
# benchmarks/_variants.py.
SELECTORS = ("full", "full-short", "random", "infobatch", "graft", "sage")


def _selector(name, args):
    from graft import GraftSelector, InfoBatchSelector, RandomSelector, SageSelector

    if name in ("full", "full-short"):
        return None
    if name == "random":
        return RandomSelector(args.fraction)
    if name == "infobatch":
        return InfoBatchSelector(args.epochs)
    if name == "sage":
        return SageSelector(args.fraction)
    if name == "graft":
        return GraftSelector(args.fraction, eps=args.eps)
    raise SystemExit(
        f"graft run: unknown selector {name!r}; use one of {', '.join(SELECTORS)}."
    )


def evaluate(model, data, batch_size=1000):
    """Top-1 accuracy of ``model`` on a dataset of ``(x, y)`` tensors, in eval mode.

    ``data[start:stop]`` must return a tensor pair (a ``TensorDataset``).

    Parameters
    ----------
    model : torch.nn.Module
    data : TensorDataset
    batch_size : int, default=1000

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft.harness import evaluate
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.eye(2)), model.bias.zero_()
    >>> evaluate(model, TensorDataset(torch.eye(2), torch.tensor([0, 1])))
    1.0
    """
    import torch

    model.eval()
    device = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x, y = data[start : start + batch_size]
            correct += int((model(x.to(device)).argmax(dim=1).cpu() == y).sum())
    return correct / len(data)


def _epochs(args, name):
    """The epochs of an arm: ``full-short`` gets ``fraction`` of them."""
    if name == "full-short":
        return max(1, round(args.fraction * args.epochs))
    return args.epochs


def _learning_rate(args, epoch, epochs):
    """The learning rate of ``epoch``: cosine to ~0 over the arm's own epochs."""
    if args.schedule == "constant":
        return args.lr
    return args.lr * 0.5 * (1 + math.cos(math.pi * (epoch + 0.5) / epochs))


def run_one(args, name, seed, train, test, info, log):
    """Train one model with one selector; the run's record.

    ``args`` are ``graft run``'s parsed flags (``build_parser().parse_args``),
    ``name`` one of :data:`SELECTORS` (or a name registered by the benchmarks),
    ``train`` / ``test`` tensor datasets and ``info`` their ``in_shape`` and
    ``n_classes``, ``log`` a ``print``-like callable. The record holds the
    accuracy after every epoch, the times and the selection history.

    Examples
    --------
    >>> from graft.harness import build_parser, load_dataset, run_one
    >>> train, test, info = load_dataset("digits", train_size=300)
    >>> args = build_parser().parse_args(["run", "--epochs", "1", "--model", "mlp"])
    >>> record = run_one(args, "random", 0, train, test, info, log=lambda *a: None)
    >>> record["selector"], len(record["history"]), record["fraction_achieved"]
    ('random', 1, 0.3)
    """
    import torch

    from graft import Graft, train_epoch
    from graft.harness._energy import EnergyMeter

    torch.manual_seed(seed)
    model = _model_factory(args.model)(info["in_shape"], info["n_classes"])
    model = model.to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    graft = Graft(
        model,
        train,
        selector=_selector(name, args),
        batch_size=args.batch_size,
        refresh_every=args.refresh_every,
        mode=args.mode,
        seed=seed,
        warm_start=args.warm_start,
        progress=not args.quiet,
    )
    epochs = _epochs(args, name)
    history, wall = [], 0.0
    with EnergyMeter(enabled=args.energy == "auto") as energy:
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(args, epoch, epochs)
            start = time.perf_counter()
            loss = train_epoch(graft, optimizer, epoch)
            wall += time.perf_counter() - start
            history.append(_epoch_record(graft, name, epoch, loss, wall, test))
            log(
                f"  {name:10s} seed {seed} epoch {epoch + 1}/{epochs}: test accuracy "
                f"{100 * history[-1]['test_accuracy']:.2f}%, fraction "
                f"{history[-1]['fraction']:.3f}, {wall:.1f} s"
            )
    return {
        "selector": name,
        "seed": seed,
        "fraction_achieved": graft.fraction_achieved(),
        "test_accuracy": history[-1]["test_accuracy"],
        "wall_time_s": wall,
        "selection_time_s": sum(h["selection_time_s"] for h in history),
        "energy_j": energy.joules,
        "energy_source": energy.source,
        "history": history,
    }


def _model_factory(spec):
    """``factory(in_shape, n_classes)`` for ``--model``: mlp, cnn or module:factory."""
    import importlib
    import importlib.util

    from graft.harness._models import make_model

    if spec in ("mlp", "cnn"):
        return lambda in_shape, n_classes: make_model(spec, in_shape, n_classes)
    module_name, _, name = spec.rpartition(":")
    if not module_name or not name:
        _fail(f"--model ({spec!r}) must be mlp, cnn or module:factory.")
    try:
        if module_name.endswith(".py"):
            import importlib.util

            loaded = importlib.util.spec_from_file_location(
                "graft_user_model", module_name
            )
            if loaded is None:
                raise ImportError(f"no such file {module_name}")
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError) as exc:
        _fail(f"--model ({spec!r}): cannot import {module_name} ({exc}).")
    factory = getattr(module, name, None)
    if not callable(factory):
        _fail(f"--model ({spec!r}): {module_name} has no callable {name!r}.")
    return factory


def _epoch_record(graft, name, epoch, loss, wall, test):
    """What the report keeps of one epoch."""
    record = graft.history[-1]
    return {
        "epoch": epoch,
        "train_loss": loss,
        "wall_time_s": wall,
        "test_accuracy": evaluate(graft.model, test),
        "fraction": record["fraction"],
        "selection_time_s": record["selection_time_s"],
        "ranks": record["ranks"] if name.startswith("graft") else [],
    }


def _load(args, regime):
    from graft.harness._data import load_dataset

    return load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        data=args.image_folder or _data_paths(args.data),
        train_size=args.train_size,
        **regime,
    )


def _describe(regime):
    parts = []
    if regime["duplicates"]:
        parts.append(f"{regime['duplicates']:g} near-duplicates")
    if regime["label_noise"]:
        parts.append(f"{regime['label_noise']:g} label noise")
    if regime["imbalance"] != 1:
        parts.append(f"imbalance {regime['imbalance']:g}")
    return ", ".join(parts)


def run(args):
    """``graft run``: the experiment, the table, the report."""
    import torch

    from graft.harness._report import format_table, write_report

    torch.set_num_threads(args.threads)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    regime = {
        "duplicates": args.duplicates,
        "label_noise": args.label_noise,
        "imbalance": args.imbalance,
    }
    corrupted = regime != {"duplicates": 0.0, "label_noise": 0.0, "imbalance": 1.0}
    data = {"": _load(args, regime)}
    if corrupted and not args.no_clean:
        data[" (clean)"] = _load(args, {})
    info = data[""][2]
    if args.epochs is None:
        args.epochs = 15 if info["name"] == "digits" else 8
    names = [s.strip() for s in args.selectors.split(",") if s.strip()]
    log(
        f"graft run: {info['name']} ({len(data[''][0])} train / {len(data[''][1])} "
        f"test{', corrupted: ' + _describe(regime) if corrupted else ''}), model "
        f"{args.model}, selectors {names}, fraction {args.fraction}, "
        f"{args.epochs} epochs, {args.seeds} seed(s), mode {args.mode}"
    )
    config = {k: v for k, v in vars(args).items() if k != "command"} | {
        "dataset": info["name"],
        "n_classes": info["n_classes"],
    }
    runs = []
    try:
        for suffix, (train, test, info) in data.items():
            for seed in range(args.seeds):
                for name in names:
                    run = run_one(args, name, seed, train, test, info, log)
                    runs.append(run | {"selector": name + suffix})
                    write_report(args.out, config, runs, plots=False)  # so far
    except KeyboardInterrupt:
        if runs:
            write_report(args.out, config, runs)
        print(
            f"graft run: interrupted; the {len(runs)} finished run(s) are in "
            f"{args.out}/report.json.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    summary = write_report(args.out, config, runs)
    print(format_table(summary))
    print(
        f"report: {args.out}/report.json; plots: accuracy_vs_time.png, "
        "accuracy_vs_epoch.png, rank_history.png"
    )
    return summary


def _fail(message):
    raise SystemExit(f"graft run: {message}")


def _check_args(args):
    """Every flag checked before any data is loaded or any model trained."""
    if not 0 < args.fraction <= 1:
        _fail(f"--fraction ({args.fraction}) must be in (0, 1]; e.g. 0.3.")
    for flag, value in (
        ("--duplicates", args.duplicates),
        ("--label-noise", args.label_noise),
    ):
        if not 0 <= value < 1:
            _fail(f"{flag} ({value}) must be in [0, 1); e.g. 0.3.")
    if args.imbalance is None:  # the main job's long tail on the bundled sets
        args.imbalance = 1.0 if args.data or args.image_folder else 10.0
    if not args.imbalance >= 1:
        _fail(f"--imbalance ({args.imbalance}) must be >= 1 (1: balanced); e.g. 10.")
    for flag, value, low, example in (
        ("--epochs", args.epochs, 1, 8),
        ("--seeds", args.seeds, 1, 3),
        ("--batch-size", args.batch_size, 1, 128),
        ("--refresh-every", args.refresh_every, 1, 1),
        ("--threads", args.threads, 1, 2),
        ("--warm-start", args.warm_start, 0, 1),
        ("--train-size", args.train_size, 1, 5000),
    ):
        if value is not None and value < low:
            _fail(f"{flag} ({value}) must be at least {low}; e.g. {flag} {example}.")
    if not (math.isfinite(args.lr) and args.lr > 0):
        _fail(f"--lr ({args.lr}) must be a finite number > 0; e.g. --lr 0.004.")
    if not (math.isfinite(args.eps) and args.eps >= 0):
        _fail(f"--eps ({args.eps}) must be a finite number >= 0; e.g. --eps 0.1.")
    names = [s.strip() for s in args.selectors.split(",") if s.strip()]
    if not names:
        _fail(
            f"--selectors ({args.selectors!r}) names no selector; e.g. --selectors "
            "full,random,infobatch,graft."
        )
    for name in names:
        if name not in SELECTORS:
            _fail(f"unknown selector {name!r}; use one of {', '.join(SELECTORS)}.")
        if name == "infobatch" and args.mode == "online":
            _fail(
                "infobatch selects in rounds from the training losses and has no "
                "per-batch selection; drop it from --selectors or use --mode refresh."
            )
    if not str(args.out).strip():
        _fail("--out is empty; pass the folder for the report, e.g. --out runs/a.")
    _check_device(args.device)
    _model_factory(args.model)  # importable and callable, before any loading
    if args.data is not None or args.image_folder is not None:
        _check_own_data(args)
    else:
        _check_data_dir(args)


def _check_device(device):
    import torch

    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        _fail(f"--device ({device!r}) is not a torch device; e.g. --device cpu.")
    if device.type == "cuda" and not torch.cuda.is_available():
        _fail(f"--device ({device}) needs CUDA, which this machine lacks; use cpu.")


def _data_paths(data):
    """``--data``: one path, or the two paths of ``X.npy,y.npy``."""
    if data is None or "," not in data:
        return data
    return tuple(part.strip() for part in data.split(","))


def _check_own_data(args):
    """``--data`` / ``--image-folder``: one of them, naming what exists."""
    if args.data_dir is not None or args.dataset != "auto":
        _fail(
            "--data and --image-folder replace --dataset and --data-dir; pass only "
            "one of them."
        )
    if args.image_folder is not None:
        if args.data is not None:
            _fail("--data and --image-folder both name the data; pass only one.")
        if not Path(args.image_folder).is_dir():
            _fail(f"--image-folder ({args.image_folder}) is not a folder; check it.")
        return  # its class sub-folders and images are checked as it loads
    paths = _data_paths(args.data)
    if Path(args.data).is_dir():
        _fail(f"--data ({args.data}) is a folder; pass images as --image-folder.")
    pair = isinstance(paths, tuple)
    if pair and (len(paths) != 2 or any(Path(p).suffix != ".npy" for p in paths)):
        _fail(f"--data ({args.data}) must be two .npy files: X.npy,y.npy.")
    if not pair and Path(paths).suffix not in (".npz", ".csv"):
        _fail(f"--data ({args.data}) must be a .npz or .csv file or X.npy,y.npy.")
    for p in paths if pair else (paths,):
        if not Path(p).is_file():
            _fail(f"--data: {p} is not a file; check the path.")
    if args.model == "cnn":
        _fail("--model cnn needs images; --data files hold feature rows: use mlp.")


def _check_data_dir(args):
    """``--dataset`` / ``--data-dir`` that would train on something else, refused."""
    from graft.harness._data import _find

    if args.data_dir is None:
        if args.dataset == "mnist":
            _fail(
                "--dataset mnist needs --data-dir: the folder of the MNIST IDX files "
                "(the default folder holds Fashion-MNIST)."
            )
        return
    folder = Path(args.data_dir)
    if args.dataset == "digits":
        _fail(
            f"--data-dir ({args.data_dir}) has no effect with --dataset digits "
            "(bundled with scikit-learn); drop it, or pass --dataset fashion-mnist."
        )
    if not folder.is_dir():
        _fail(
            f"--data-dir ({args.data_dir}) is not a folder; pass the folder of "
            "the IDX files."
        )
    stems = [
        f"{p}-{kind}-ubyte"
        for p in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    ]
    missing = [stem for stem in stems if _find(folder, stem) is None]
    if missing:
        _fail(
            f"--data-dir ({args.data_dir}) lacks {', '.join(missing)} (or .gz); pass "
            "the folder that holds the four IDX files."
        )


def _config_flags(path):
    """The flags a TOML file sets, as command-line tokens (argparse checks them)."""
    import tomllib

    try:
        table = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        _fail(f"--config ({path}) is not a file; check the path.")
    except tomllib.TOMLDecodeError as exc:
        _fail(f"--config ({path}) is not valid TOML: {exc}.")
    table = table.get("run", table)  # a [run] table, or flags at the top
    known = {flag[2:]: options for flag, options in _RUN_FLAGS}
    tokens = []
    for key, value in table.items():
        flag = key.replace("_", "-")
        if flag not in known or flag == "config":
            _fail(f"--config ({path}): unknown flag {key!r}; use the names of "
                  "graft run --help, e.g. epochs = 8.")  # fmt: skip
        if known[flag].get("action") == "store_true":
            if not isinstance(value, bool):
                _fail(f"--config ({path}): {key} must be true or false.")
            tokens += [f"--{flag}"] if value else []
        else:
            value = ",".join(map(str, value)) if isinstance(value, list) else value
            tokens += [f"--{flag}", str(value)]
    return tokens


def _prepare_out(out, overwrite):
    """Create ``--out`` and prove it writable, before any training."""
    folder = Path(out)
    report = folder / "report.json"
    if report.exists() and not overwrite:
        _fail(
            f"--out ({out}) already holds a report; pass another --out, or "
            "--overwrite to replace it."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".graft-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        _fail(
            f"--out ({out}) is not writable ({exc.strerror}); pass a folder you "
            "can write to."
        )


def main(argv=None):
    """Entry point of the ``graft`` command.

    Parameters
    ----------
    argv : list of str or None
        The arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success; errors in the flags exit with status 2, before loading.

    Examples
    --------
    >>> from graft.harness import main
    >>> main(["run", "--epochs", "0"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: ...
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "run" and args.config is not None:
        # The file's flags first, so that those on the command line win.
        args = build_parser().parse_args(
            ["run", *_config_flags(args.config), *argv[1:]]
        )
    if args.command == "run":
        _check_args(args)
        _prepare_out(args.out, args.overwrite)
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
