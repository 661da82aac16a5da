"""The learning-rate grid of the selection benchmark: its table and its runs."""

import argparse

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
import selection_bench  # noqa: E402


def _opts(**kw):
    base = {
        "dataset": "digits",
        "model": "mlp",
        "epochs": 1,
        "fraction": 0.3,
        "seeds": 2,
        "train_size": 200,
        "lr": None,
        "arms": ",".join(selection_bench.ARMS),
        "table": "",
        "threads": 2,
    }
    return argparse.Namespace(**{**base, **kw})


def test_the_lr_table_bolds_each_arms_best_mean_over_regimes():
    # For full data lr 0.002 wins on average (80 + 70) / 2 = 75 against
    # (90 + 50) / 2 = 70, although lr 0.001 is best on the first regime; for
    # random subsets lr 0.001 wins (60 against 55).
    rows = [
        {"regime": "clean", "arm": "full", "lr": 0.001, "accuracy": [0.9, 0.9]},
        {"regime": "clean", "arm": "full", "lr": 0.002, "accuracy": [0.8, 0.8]},
        {"regime": "noise", "arm": "full", "lr": 0.001, "accuracy": [0.4, 0.6]},
        {"regime": "noise", "arm": "full", "lr": 0.002, "accuracy": [0.7, 0.7]},
        {"regime": "clean", "arm": "random", "lr": 0.001, "accuracy": [0.6]},
        {"regime": "clean", "arm": "random", "lr": 0.002, "accuracy": [0.5]},
        {"regime": "noise", "arm": "random", "lr": 0.001, "accuracy": [0.6]},
        {"regime": "noise", "arm": "random", "lr": 0.002, "accuracy": [0.6]},
    ]
    lines = selection_bench.lr_table(rows, _opts()).splitlines()
    assert "--arms full,random" in lines[0]
    assert lines[2] == "| regime | arm | lr 0.001 | lr 0.002 |"
    assert lines[4:10] == [
        "| clean | full | 90.00 | 80.00 |",
        "| noise | full | 50.00 | 70.00 |",
        "| mean | full | 70.00 | **75.00** |",
        "| clean | random | 60.00 | 50.00 |",
        "| noise | random | 60.00 | 60.00 |",
        "| mean | random | **60.00** | 55.00 |",
    ]


def test_the_lr_grid_trains_each_arm_at_each_rate():
    rows = selection_bench.lr_rows(_opts(), "clean", [1e-3, 5e-2], ("full", "random"))
    assert [(r["arm"], r["lr"]) for r in rows] == [
        ("full", 1e-3),
        ("full", 5e-2),
        ("random", 1e-3),
        ("random", 5e-2),
    ]
    assert all(len(r["accuracy"]) == 2 for r in rows)  # one run per seed
    # The rate reaches the optimizer: one epoch at 5e-2 ends elsewhere than at 1e-3.
    assert rows[0]["accuracy"] != rows[1]["accuracy"]
    assert rows[2]["accuracy"] != rows[3]["accuracy"]


def test_the_benchmark_passes_its_rate_to_graft_run():
    assert selection_bench._args(_opts(lr=0.02)).lr == 0.02
    assert selection_bench._args(_opts(), lr=0.05).lr == 0.05
    default = selection_bench.build_parser().parse_args(["run"]).lr
    assert selection_bench._args(_opts()).lr == default


def test_the_table_names_the_command_that_made_it():
    row = {
        "regime": "clean",
        "arm": "graft",
        "fraction": 0.3,
        "accuracy_mean": 0.875,
        "accuracy_sd": 0.001,
        "accuracy_at_graft_time": 0.87,
        "accuracy_at_graft_time_sd": 0.002,
        "wall_time_s": 4.5,
        "selection_share": 0.063,
        "time_to_full_minus_half_point": float("inf"),
    }
    default = selection_bench.table([row], _opts()).splitlines()
    assert "--arms" not in default[0] and "--table" not in default[0]
    assert "peak learning rate 0.004" in default[0]  # graft run's default
    cells = "| clean | graft | 0.30 | 87.50 +- 0.10 | 87.00 +- 0.20 | 4.5 | 6.3% |"
    assert default[-1] == cells + " never |"
    ablation = selection_bench.table(
        [row], _opts(arms="random,graft", table="ablation", lr=0.002)
    ).splitlines()[0]
    assert "--lr 0.002 --arms random,graft --table ablation`" in ablation
    assert "peak learning rate 0.002" in ablation


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--lr-grid", ""], "--lr-grid"),
        (["--lr-grid", "0.001,x"], "--lr-grid"),
        (["--lr-grid", "0.001,-0.002"], "--lr-grid"),
        (["--lr-grid", "nan"], "--lr-grid"),
        (["--lr-grid", "0.001,0.001"], "repeats"),
        (["--lr-grid", "0.001", "--lr", "0.002"], "--lr"),
        (["--lr-grid", "0.001", "--table", "x"], "--table"),
    ],
)
def test_a_bad_lr_grid_is_refused_before_any_run(argv, named, capsys, monkeypatch):
    def no_runs(*_):
        raise AssertionError("a run started")

    monkeypatch.setattr(selection_bench, "lr_rows", no_runs)
    with pytest.raises(SystemExit):
        selection_bench.main(argv)
    assert named in capsys.readouterr().err


def test_the_lr_grid_parses_its_rates():
    assert selection_bench._rates("0.001,0.004") == [0.001, 0.004]


def test_the_plot_curve_is_the_mean_over_seeds_with_its_sd():
    curves = [[(1.0, 0.80), (2.0, 0.90)], [(3.0, 0.70), (4.0, 0.80), (5.0, 0.85)]]
    t, acc, sd = selection_bench.mean_curve(curves)
    assert t == [2.0, 3.0]  # the epochs every seed has
    assert acc == pytest.approx([75.0, 85.0])
    assert sd == pytest.approx([5.0, 5.0])
