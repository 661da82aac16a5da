"""Offline data loaders and the ``graft run`` command."""

import gzip
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from graft.harness import load_dataset, load_idx, load_mnist_like  # noqa: E402
from graft.harness.cli import main  # noqa: E402


def _write_idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_idx_reader_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x08)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, 0x08)
    np.testing.assert_array_equal(
        load_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images
    )
    X, y = load_mnist_like(tmp_path, split="test")
    np.testing.assert_array_equal(X, images)
    np.testing.assert_array_equal(y, labels)


def test_idx_reader_rejects_other_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_idx(tmp_path / "bad")


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(
        FileNotFoundError, match="apt-get install dataset-fashion-mnist"
    ):
        load_mnist_like(tmp_path)
    # A folder named and wrong is an error, not a silent switch to digits ...
    with pytest.raises(FileNotFoundError, match="no t10k-images/labels IDX files"):
        load_dataset("auto", data_dir=tmp_path)
    with pytest.raises(ValueError, match="'mnist' needs data_dir"):
        load_dataset("mnist")
    for bad, error in ((0, ValueError), (-5, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="train_size"):
            load_dataset("digits", train_size=bad)
    # ... but without the default files, auto means digits.
    monkeypatch.setenv("GRAFT_FASHION_MNIST", str(tmp_path))
    train, test, info = load_dataset("auto")
    assert info["name"] == "digits" and info["in_shape"] == (1, 8, 8)
    assert len(train) + len(test) == 1797


def test_graft_run_writes_the_report_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    main(
        [
            "run",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "2",
            "--seeds",
            "2",
            "--fraction",
            "0.3",
            "--imbalance",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert len(report["runs"]) == 8  # full, random, infobatch, graft x 2 seeds
    for run in report["runs"]:
        for key in (
            "selector",
            "seed",
            "fraction_achieved",
            "test_accuracy",
            "wall_time_s",
            "selection_time_s",
            "history",
        ):
            assert key in run
        assert len(run["history"]) == 2
    full = [r for r in report["runs"] if r["selector"] == "full"]
    assert all(r["fraction_achieved"] == 1.0 for r in full)
    sub = [r for r in report["runs"] if r["selector"] in ("random", "graft")]
    assert all(0 < r["fraction_achieved"] <= 0.3 for r in sub)
    infobatch = [r for r in report["runs"] if r["selector"] == "infobatch"]
    assert all(0.3 < r["fraction_achieved"] < 1.0 for r in infobatch)
    for name in ("accuracy_vs_time.png", "accuracy_vs_epoch.png", "rank_history.png"):
        assert (out / name).stat().st_size > 1000
    table = capsys.readouterr().out
    assert "selector" in table and "graft" in table
    if report["versions"]["codecarbon"] is None:  # no meter: no made-up figure
        assert "not measured" in table and "n/m" in table
        assert all(r["energy_j"] is None for r in report["runs"])
    assert report["versions"]["torch"] and report["machine"]["cpu_count"] >= 1


def test_graft_run_rejects_bad_flags(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown selector 'grafty'; use one of full"):
        main(
            [
                "run",
                "--dataset",
                "digits",
                "--selectors",
                "full,grafty",
                "--out",
                str(tmp_path),
            ]
        )
    with pytest.raises(SystemExit, match="--fraction"):
        main(["run", "--dataset", "digits", "--fraction", "2", "--out", str(tmp_path)])
    for flag, value in (("--duplicates", "1"), ("--label-noise", "-0.1")):
        with pytest.raises(SystemExit, match=f"{flag}.*must be in"):
            main(["run", "--dataset", "digits", flag, value, "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--imbalance"):
        main(["run", "--dataset", "digits", "--imbalance", "0.5"])


def test_graft_run_on_corrupted_data_runs_the_clean_line_beside_it(tmp_path):
    out = tmp_path / "noisy"
    argv = ["run", "--dataset", "digits", "--model", "mlp", "--epochs", "2"]
    argv += ["--selectors", "full-short,random", "--label-noise", "0.3", "--seeds", "1"]
    argv += ["--imbalance", "1"]
    main([*argv, "--out", str(out), "--quiet"])
    runs = json.loads((out / "report.json").read_text())["runs"]
    names = [r["selector"] for r in runs]
    assert names == ["full-short", "random", "full-short (clean)", "random (clean)"]
    # full-short: full data for fraction x epochs = round(0.6) = 1 epoch.
    assert [len(r["history"]) for r in runs] == [1, 2, 1, 2]


def test_cosine_schedule_decays_to_near_zero_over_each_arm():
    from graft.harness.cli import _epochs, _learning_rate, build_parser

    args = build_parser().parse_args(["run", "--epochs", "8", "--lr", "0.01"])
    lrs = [_learning_rate(args, e, 8) for e in range(8)]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.01
    assert lrs[-1] < 0.01 * 0.02
    assert _epochs(args, "full-short") == 2 and _epochs(args, "random") == 8
    args = build_parser().parse_args(["run", "--schedule", "constant", "--lr", "0.01"])
    assert _learning_rate(args, 5, 8) == 0.01


def _no_loading(monkeypatch):
    """Make any data loading or training fail the test."""
    import graft.harness.cli as cli

    def forbidden(*args, **kwargs):
        raise AssertionError("data was loaded before the flags were checked")

    monkeypatch.setattr(cli, "_load", forbidden)
    monkeypatch.setattr(cli, "run_one", forbidden)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--seeds", "0"], "--seeds"),
        (["--selectors", ""], "--selectors"),
        (["--selectors", " , "], "names no selector"),
        (["--selectors", "full,grafty"], "unknown selector 'grafty'"),
        (["--selectors", "graft-volume"], "unknown selector 'graft-volume'"),
        (["--train-size", "0"], "--train-size"),
        (["--train-size", "-5"], "--train-size"),
        (["--batch-size", "0"], "--batch-size"),
        (["--refresh-every", "0"], "--refresh-every"),
        (["--lr", "0"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--eps", "-1"], "--eps"),
        (["--dataset", "mnist"], "--dataset mnist needs --data-dir"),
        (["--data-dir", "/no/such/folder"], r"--data-dir \(/no/such/folder\) is not"),
    ],
)
def test_graft_run_checks_every_flag_before_loading(
    tmp_path, monkeypatch, argv, message
):
    _no_loading(monkeypatch)
    with pytest.raises(SystemExit, match=message):
        main(["run", *argv, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_graft_run_refuses_a_data_dir_without_the_idx_files(tmp_path, monkeypatch):
    _no_loading(monkeypatch)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    for dataset in ("auto", "fashion-mnist"):
        with pytest.raises(SystemExit, match="lacks train-labels-idx1-ubyte"):
            main(["run", "--dataset", dataset, "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="no effect with --dataset digits"):
        main(["run", "--dataset", "digits", "--data-dir", str(tmp_path)])


def test_graft_run_checks_out_before_any_training(tmp_path, monkeypatch):
    _no_loading(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match=r"--out .* is not writable"):
        main(["run", "--dataset", "digits", "--out", str(blocker / "sub")])
    done = tmp_path / "done"
    done.mkdir()
    (done / "report.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"already holds a report.*--overwrite"):
        main(["run", "--dataset", "digits", "--out", str(done)])
    assert (done / "report.json").read_text() == "{}"  # untouched


def test_graft_run_keeps_the_finished_runs_on_ctrl_c(tmp_path, monkeypatch, capsys):
    import graft.harness.cli as cli

    real, calls = cli.run_one, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "run_one", interrupted_second)
    out = tmp_path / "run"
    argv = ["run", "--dataset", "digits", "--epochs", "1", "--seeds", "1"]
    argv += ["--imbalance", "1", "--selectors", "random,full", "--quiet"]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--out", str(out)])
    assert stop.value.code == 130
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["selector"] for r in runs] == ["random"]
    assert "1 finished run(s)" in capsys.readouterr().err
    main([*argv, "--out", str(out), "--overwrite"])  # and a rerun replaces it
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["selector"] for r in runs] == ["random", "full"]


def test_imbalance_on_a_small_subset_keeps_every_class_it_can():
    train, _, _ = load_dataset("digits", train_size=30, imbalance=10)
    assert 0 < len(train) <= 30


def test_graft_run_refuses_empty_out_and_infobatch_online(tmp_path, monkeypatch):
    _no_loading(monkeypatch)
    with pytest.raises(SystemExit, match="--out is empty"):
        main(["run", "--dataset", "digits", "--out", ""])
    with pytest.raises(SystemExit, match="infobatch selects in rounds"):
        main(["run", "--mode", "online", "--out", str(tmp_path / "o")])


@pytest.fixture
def saved_axes(monkeypatch):
    """``{file name: (line labels, y label)}`` of each figure a test saves."""
    figure = pytest.importorskip("matplotlib.figure")
    seen = {}

    def record(fig, path, **_):
        ax = fig.axes[0]
        seen[path.name] = (
            [line.get_label() for line in ax.get_lines()],
            ax.get_ylabel(),
        )

    monkeypatch.setattr(figure.Figure, "savefig", record)
    return seen


def test_the_chance_line_shows_only_near_the_curves(tmp_path, saved_axes):
    from graft.harness._report import _plots

    def runs(accuracy):
        history = [{"wall_time_s": t, "test_accuracy": accuracy} for t in (1.0, 2.0)]
        return [{"selector": "full", "seed": 0, "history": history}]

    _plots(tmp_path, runs(0.85), chance=10.0)  # 75 points above chance
    for name in ("accuracy_vs_time.png", "accuracy_vs_epoch.png"):
        labels, ylabel = saved_axes[name]
        assert "chance" not in labels
        assert ylabel == "test accuracy (%; chance 10)"
    _plots(tmp_path, runs(0.25), chance=10.0)  # 15 points above chance
    for name in ("accuracy_vs_time.png", "accuracy_vs_epoch.png"):
        labels, ylabel = saved_axes[name]
        assert "chance" in labels
        assert ylabel == "test accuracy (%)"


def test_the_chance_line_is_drawn_within_20_points_of_the_lowest_band():
    from graft.harness._report import _shows_chance

    assert _shows_chance(10.0, 29.0)  # 19 points above chance
    assert _shows_chance(10.0, 30.0)
    assert not _shows_chance(10.0, 31.0)  # 21 points above


def test_the_band_below_a_curve_brings_the_chance_line_back(tmp_path, saved_axes):
    from graft.harness._report import _plots

    # Two seeds at 20 and 50 %: the mean 35 is 25 points above chance, the band
    # (one sd, 15) reaches down to 20, 10 points above it.
    runs = [
        {
            "selector": "full",
            "seed": s,
            "history": [{"wall_time_s": 1.0, "test_accuracy": a}],
        }
        for s, a in ((0, 0.2), (1, 0.5))
    ]
    _plots(tmp_path, runs, chance=10.0)
    assert "chance" in saved_axes["accuracy_vs_time.png"][0]
