"""graft run on the user's own files, a TOML config, the device, the energy meter."""

import json
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from graft.harness import load_file, main  # noqa: E402
from graft.harness._energy import EnergyMeter  # noqa: E402

QUICK = ["--epochs", "1", "--seeds", "1", "--quiet", "--selectors", "full,random"]


def _blobs(n=240, d=5, classes=3, seed=0):
    """Three well-separated Gaussian classes: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return rng.standard_normal((n, d)) + 4.0 * np.eye(classes, d)[y], y


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_graft_run_on_an_npz_file(tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    out = tmp_path / "run"
    main(["run", "--data", str(tmp_path / "blobs.npz"), "--out", str(out), *QUICK])
    report = _report(out)
    assert report["config"]["dataset"] == "blobs.npz"
    assert report["config"]["imbalance"] == 1.0  # own data: taken as it is
    full = next(r for r in report["runs"] if r["selector"] == "full")
    assert full["test_accuracy"] > 0.6  # well above chance (1/3) after 2 steps


def test_graft_run_on_a_csv_file_with_string_labels(tmp_path):
    X, y = _blobs()
    names = np.array(["cat", "dog", "eel"])[y]
    lines = ["f0,f1,f2,f3,f4,label"] + [
        ",".join(f"{v:.4f}" for v in row) + f",{c}"
        for row, c in zip(X, names, strict=True)
    ]
    (tmp_path / "blobs.csv").write_text("\n".join(lines))
    X_tr, X_te, _, y_te = load_file(tmp_path / "blobs.csv", seed=0)
    assert X_tr.shape == (192, 5) and X_te.shape == (48, 5)
    assert np.bincount(y_te).tolist() == [16, 16, 16]  # a stratified split
    out = tmp_path / "run"
    main(["run", "--data", str(tmp_path / "blobs.csv"), "--out", str(out), *QUICK])
    assert len(_report(out)["runs"]) == 2


def test_a_file_that_cannot_be_read_is_named(tmp_path):
    np.savez(tmp_path / "bad.npz", features=np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"bad.npz holds \['features'\] but lacks"):
        load_file(tmp_path / "bad.npz")
    (tmp_path / "bad.csv").write_text("a,label\nx,1\ny,2\n")
    with pytest.raises(ValueError, match="must be numeric"):
        load_file(tmp_path / "bad.csv")
    for argv, message in (
        (["--data", str(tmp_path / "none.npz")], "is not a file"),
        (["--data", str(tmp_path / "bad.txt")], "must be a .npz or .csv"),
        (["--data", f"{tmp_path / 'a.npy'},{tmp_path / 'b.txt'}"], "two .npy files"),
        (["--data", f"{tmp_path / 'a.npy'},{tmp_path / 'b.npy'}"], "is not a file"),
        (["--data", str(tmp_path)], "pass images as --image-folder"),
        (["--image-folder", str(tmp_path / "bad.npz")], "is not a folder"),
        (["--image-folder", str(tmp_path), "--data", "x.npz"], "pass only one"),
        (["--data", str(tmp_path / "bad.npz"), "--model", "cnn"], "needs images"),
        (
            ["--data", str(tmp_path / "bad.npz"), "--dataset", "digits"],
            "replace --dataset",
        ),
        (["--device", "warp"], r"--device \('warp'\) is not a torch device"),
    ):
        with pytest.raises(SystemExit, match=message):
            main(["run", *argv, "--out", str(tmp_path / "out")])


def test_graft_run_on_a_pair_of_npy_files(tmp_path):
    X, y = _blobs()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    X_tr, _, _, y_te = load_file((tmp_path / "X.npy", tmp_path / "y.npy"))
    assert X_tr.shape == (192, 5) and np.bincount(y_te).tolist() == [16, 16, 16]
    rows = {tuple(r) for r in np.round(X, 4).astype(np.float32).tolist()}
    assert all(tuple(r) in rows for r in np.round(X_tr, 4).tolist())  # rows kept
    out = tmp_path / "run"
    data = f"{tmp_path / 'X.npy'},{tmp_path / 'y.npy'}"
    main(["run", "--data", data, "--out", str(out), *QUICK])
    report = _report(out)
    assert report["config"]["dataset"] == "X.npy"
    full = next(r for r in report["runs"] if r["selector"] == "full")
    assert full["test_accuracy"] > 0.6
    with pytest.raises(ValueError, match=r"a \.npy pair is two files"):
        load_file((tmp_path / "X.npy",))


def test_a_toml_config_sets_flags_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\ndataset = "digits"\nepochs = 1\nseeds = 1\nquiet = true\n'
        'selectors = ["full", "random"]\nfraction = 0.5\ntrain_size = 300\n'
    )
    out = tmp_path / "run"
    main(["run", "--config", str(config), "--fraction", "0.25", "--out", str(out)])
    report = _report(out)
    assert report["config"]["fraction"] == 0.25  # the command line wins
    assert report["config"]["epochs"] == 1 and report["config"]["train_size"] == 300
    assert [r["selector"] for r in report["runs"]][:2] == ["full", "random"]
    config.write_text("epochz = 3\n")
    with pytest.raises(SystemExit, match="unknown flag 'epochz'"):
        main(["run", "--config", str(config), "--out", str(tmp_path / "b")])
    config.write_text('model = "resnet"\n')  # argparse checks the choices
    with pytest.raises(SystemExit):
        main(["run", "--config", str(config), "--out", str(tmp_path / "c")])


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and "graft (maxvol-kit" in capsys.readouterr().out


def test_energy_is_not_measured_without_codecarbon(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import fails
    with EnergyMeter() as meter:
        pass
    assert meter.joules is None and meter.source.startswith("not measured")


def test_energy_comes_from_codecarbon_when_it_is_there(monkeypatch):
    calls = []

    class Tracker:
        def __init__(self, **options):
            calls.append(options)
            self.final_emissions_data = types.SimpleNamespace(energy_consumed=2e-6)

        def start(self):
            calls.append("start")

        def stop(self):
            calls.append("stop")

    fake = types.ModuleType("codecarbon")
    fake.OfflineEmissionsTracker = Tracker
    monkeypatch.setitem(sys.modules, "codecarbon", fake)
    with EnergyMeter() as meter:
        pass
    assert calls[1:] == ["start", "stop"] and calls[0]["save_to_file"] is False
    assert meter.joules == pytest.approx(2e-6 * 3.6e6)  # kWh to J
    assert meter.source.startswith("codecarbon")


def test_graft_run_on_an_image_folder_with_a_model_of_your_own(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "light")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(30):
            pixels = np.clip(rng.normal(60 + 120 * c, 20, (8, 8)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(
                tmp_path / "images" / name / f"{i}.png"
            )
    (tmp_path / "mymodel.py").write_text(
        "from torch import nn\n\n"
        "def build(in_shape, n_classes):\n"
        "    assert tuple(in_shape) == (1, 8, 8)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes))\n"
    )
    out = tmp_path / "run"
    main(["run", "--image-folder", str(tmp_path / "images"), "--model",
          f"{tmp_path / 'mymodel.py'}:build", "--out", str(out), *QUICK])  # fmt: skip
    report = _report(out)
    assert report["config"]["dataset"] == "images"
    assert len(report["runs"]) == 2 and report["runs"][0]["test_accuracy"] >= 0.5
    for spec, message in (
        ("nowhere:build", "cannot import nowhere"),
        (f"{tmp_path / 'mymodel.py'}:missing", "has no callable 'missing'"),
        ("resnet", "must be mlp, cnn or module:factory"),
    ):
        with pytest.raises(SystemExit, match=message):
            main(["run", "--model", spec, "--out", str(tmp_path / "x")])
