"""GraftCallback: a Lightning run selects exactly what a plain Graft loop selects."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from graft import Graft, GraftSelector, RandomSelector  # noqa: E402

EPOCHS = 3


def _digits(n=192):
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:n] / 16.0, dtype=torch.float32)
    return TensorDataset(X, torch.tensor(y[:n]))


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _loss(net, batch):
    losses = nn.functional.cross_entropy(
        net(batch.data[0]), batch.data[1], reduction="none"
    )
    return (batch.weights * losses).mean()


def _plain_run(selector, mode, epochs=EPOCHS, seed=5):
    """The oracle: Graft in a plain PyTorch loop, the same net and optimizer."""
    net = _net()
    graft = Graft(
        net,
        _digits(),
        selector=selector,
        batch_size=32,
        refresh_every=2,
        mode=mode,
        seed=seed,
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    seen = []
    for epoch in range(epochs):
        seen.append([])
        for batch in graft.batches(epoch):
            seen[-1].append(batch.indices)
            loss = _loss(net, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [torch.cat(s) for s in seen], graft


def _module_class():
    L = pytest.importorskip("lightning")

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _net()
            self.seen = {}

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).append(batch.indices.cpu())
            return _loss(self.net, batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.2)

    return L, Classifier


def _trainer(L, callbacks, tmp_path, epochs=EPOCHS, checkpoints=False):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=checkpoints,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )


def _callback(selector, mode, seed=5):
    from graft.lightning import GraftCallback

    return GraftCallback(
        selector,
        dataset=_digits(),
        batch_size=32,
        refresh_every=2,
        mode=mode,
        seed=seed,
    )


def _fit(selector, mode, tmp_path, **kwargs):
    L, Classifier = _module_class()
    module, callback = Classifier(), _callback(selector, mode)
    trainer = _trainer(L, [callback], tmp_path, **kwargs)
    trainer.fit(module, train_dataloaders=callback.train_dataloader())
    return module, callback


@pytest.mark.parametrize(
    ("selector", "mode"),
    [
        (GraftSelector(0.3), "refresh"),
        (GraftSelector(0.3), "online"),
        (RandomSelector(0.4), "refresh"),
    ],
    ids=["graft-refresh", "graft-online", "random-refresh"],
)
def test_lightning_run_trains_on_what_plain_graft_serves(selector, mode, tmp_path):
    module, callback = _fit(selector, mode, tmp_path)
    expected, plain = _plain_run(selector, mode)
    assert sorted(module.seen) == list(range(EPOCHS))
    for epoch in range(EPOCHS):
        got = torch.cat(module.seen[epoch])
        # Same samples in the same order: the batches are the plain loop's.
        assert torch.equal(got, expected[epoch]), f"epoch {epoch}"
        assert len(set(got.tolist())) == len(got)
    n = len(callback.graft.dataset)
    assert callback.graft.fraction_achieved() == pytest.approx(
        plain.fraction_achieved()
    )
    trained = sum(len(torch.cat(s)) for s in module.seen.values())
    assert callback.graft.fraction_achieved() == pytest.approx(trained / (EPOCHS * n))
    assert 0 < callback.graft.fraction_achieved() <= max(selector.fraction, 0.4)
    assert [h["epoch"] for h in callback.graft.history] == list(range(EPOCHS))


def test_refresh_rounds_follow_refresh_every(tmp_path):
    _, callback = _fit(GraftSelector(0.3), "refresh", tmp_path)
    rounds = [bool(h["ranks"]) for h in callback.graft.history]
    assert rounds == [True, False, True]  # refresh_every=2 over 3 epochs


def test_weights_reach_the_training_step(tmp_path):
    L, Classifier = _module_class()

    class Recorder(Classifier):
        def training_step(self, batch, batch_idx):
            self.seen.setdefault("weights", []).append(batch.weights)
            return super().training_step(batch, batch_idx)

    selector = GraftSelector(0.3)  # online: inverse-probability weights
    module, callback = Recorder(), _callback(selector, "online")
    trainer = _trainer(L, [callback], tmp_path, epochs=1)
    trainer.fit(module, train_dataloaders=callback.train_dataloader())
    weights = torch.cat(module.seen["weights"])
    assert torch.all(weights >= 0)
    assert not torch.all(weights == 1)  # the sampling weights, not ones


def test_resume_from_a_lightning_checkpoint_continues_the_selection(tmp_path):
    L, Classifier = _module_class()
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(root, ckpt_path=None):
        module, callback = Classifier(), _callback(GraftSelector(0.3), "refresh")
        saver = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1)
        trainer = _trainer(L, [callback, saver], root, checkpoints=True)
        trainer.fit(
            module, train_dataloaders=callback.train_dataloader(), ckpt_path=ckpt_path
        )
        return module, callback

    full, full_cb = run(tmp_path / "full")
    # Resume after epoch 0: epoch 1 must train on the round made at epoch 0
    # (refresh_every=2), which only the checkpointed callback state holds.
    ckpt = next((tmp_path / "full").glob("epoch=0-*.ckpt"))
    resumed, resumed_cb = run(tmp_path / "resumed", ckpt_path=ckpt)
    assert sorted(resumed.seen) == [1, 2]
    for epoch in (1, 2):
        assert torch.equal(
            torch.cat(resumed.seen[epoch]), torch.cat(full.seen[epoch])
        ), f"epoch {epoch}"
    assert resumed_cb.graft.state_dict()["selected_at"] == 2
    assert torch.equal(
        resumed_cb.graft.state_dict()["selected_indices"],
        full_cb.graft.state_dict()["selected_indices"],
    )
    assert resumed_cb.graft.fraction_achieved() == pytest.approx(
        full_cb.graft.fraction_achieved()
    )


def test_a_trainer_without_the_callbacks_loader_is_an_error(tmp_path):
    L, Classifier = _module_class()
    callback = _callback(RandomSelector(0.5), "refresh")
    loader = torch.utils.data.DataLoader(_digits(), batch_size=32)
    trainer = _trainer(L, [callback], tmp_path, epochs=1)
    with pytest.raises(RuntimeError, match="train_dataloaders=callback"):
        trainer.fit(Classifier(), train_dataloaders=loader)


def test_the_loader_outside_a_trainer_is_an_error():
    pytest.importorskip("lightning")
    callback = _callback(RandomSelector(0.5), "refresh")
    with pytest.raises(RuntimeError, match="Trainer\\(callbacks=\\[callback\\]\\)"):
        next(iter(callback.train_dataloader()))


def test_bad_arguments_fail_at_construction():
    pytest.importorskip("lightning")
    with pytest.raises(ValueError, match="mode"):
        _callback(RandomSelector(0.5), "sometimes")


def test_lightning_is_imported_only_by_graft_lightning_and_named_if_missing():
    # One subprocess: a fresh interpreter without lightning in sys.modules.
    code = (
        "import sys, graft\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning') or m == 'graft.lightning']\n"
        "assert not bad, bad\n"
        "sys.modules['lightning'] = None  # as if it were not installed\n"
        "try:\n"
        "    import graft.lightning\n"
        "except ImportError as exc:\n"
        "    assert 'pip install lightning' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('graft.lightning imported without lightning')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


DDP_SCRIPT = """
import json, sys
import torch
import torch.nn.functional as F
import lightning.pytorch as L
from torch.utils.data import TensorDataset
from graft import RandomSelector
from graft.lightning import GraftCallback


class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                       torch.nn.Linear(8, 3))
        self.seen = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        x, y = batch.data
        self.seen += [[self.current_epoch, k] for k in batch.indices.tolist()]
        losses = F.cross_entropy(self(x), y, reduction="none")
        return self.trainer.callbacks[0].update(batch, losses)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(120, 4, generator=g), torch.arange(120) % 3)
    callback = GraftCallback(RandomSelector(0.5), dataset=data, batch_size=10,
                             refresh_every=1)
    module = Module()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp",
                        callbacks=[callback], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=callback.train_dataloader())
    with open(f"{sys.argv[1]}/rank{trainer.global_rank}.json", "w") as f:
        json.dump({"seen": module.seen, "history": callback.graft.history}, f)
"""


@pytest.mark.slow
def test_the_callback_under_two_process_ddp_serves_disjoint_shares_of_one_selection(
    tmp_path,
):
    """Two CPU processes (gloo): together they train on what one process selects."""
    pytest.importorskip("lightning")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(120, 4, generator=g), torch.arange(120) % 3)
    plain = Graft(torch.nn.Linear(4, 3), data, selector=RandomSelector(0.5),
                  batch_size=10, refresh_every=1)  # fmt: skip
    for epoch in range(2):
        plain.set_epoch(epoch)
        shares = [{k for e, k in r["seen"] if e == epoch} for r in ranks]
        assert not shares[0] & shares[1]  # disjoint
        assert shares[0] | shares[1] == set(plain.selected_indices.tolist())
        assert all(r["history"][epoch]["samples"] == 60 for r in ranks)
