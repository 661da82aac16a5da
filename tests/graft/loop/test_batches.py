"""Graft in the user's own loop: their rows, collate, DataLoader options and model.

Oracles: the selection of the same data in the plain ``(x, y)`` format, a
DataLoader without workers, hand-computed weighted means and gradients, and
a fresh forward pass of the unchanged model.
"""

import copy
import subprocess
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

from graft import Graft, GraftBatch, GraftSelector, RandomSelector  # noqa: E402
from graft._features import penultimate  # noqa: E402
from tests.graft.helpers import per_batch_graft  # noqa: E402

N, D, C = 240, 10, 3


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g)
    y = (X @ torch.randn(D, C, generator=g)).argmax(dim=1)
    return X, y


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))


class DictRows(Dataset):
    """Hugging Face style rows: a dict per sample, with a non-tensor field."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.X[i], "label": int(self.y[i]), "id": f"s{i}"}


def dict_collate(rows):
    return {
        "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
        "labels": torch.tensor([r["label"] for r in rows]),
        "ids": [r["id"] for r in rows],
    }


class Output:
    """A model output with a ``logits`` attribute (like ``ModelOutput``)."""

    def __init__(self, logits):
        self.logits = logits


class DictModel(nn.Module):
    """Takes ``pixel_values``, returns an object with ``.logits``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, pixel_values):
        return Output(self.net(pixel_values))


class TwoInputs(nn.Module):
    """``model(x1, x2)``: the two halves of the features, returns a dict."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x1, x2):
        return {"logits": self.net(torch.cat([x1, x2], dim=1))}


class PairRows(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.X[i, :4], self.X[i, 4:]), self.y[i]


class TripleRows(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.X[i], self.y[i], torch.tensor(float(i))


def _selection(graft):
    graft.set_epoch(0)
    return graft.selected_indices, graft.selected_weights


def _options(**kw):
    return {
        "batch_size": 32,
        "seed": 3,
        "selector": per_batch_graft(0.3),
        **kw,
    }


@pytest.mark.parametrize("fmt", ["dict", "pair", "triple"])
def test_any_row_format_selects_what_the_plain_format_selects(fmt):
    X, y = _tensors()
    plain = _selection(Graft(_net(), TensorDataset(X, y), **_options()))
    if fmt == "dict":
        graft = Graft(DictModel(_net()), DictRows(X, y), **_options())
        graft.dataloader(collate_fn=dict_collate)  # the rounds use this collate
    elif fmt == "pair":
        graft = Graft(TwoInputs(_net()), PairRows(X, y), **_options())
    else:
        graft = Graft(_net(), TripleRows(X, y), **_options())
    got = _selection(graft)
    assert torch.equal(got[0], plain[0])
    torch.testing.assert_close(got[1], plain[1], rtol=0, atol=0)


def _served(graft, loader, epochs, X):
    """(indices, weights) per epoch; checks that each batch's data is its rows."""
    out = []
    for epoch in range(epochs):
        graft.set_epoch(epoch)
        n_batches, indices, weights = 0, [], []
        for batch in loader:
            assert isinstance(batch, GraftBatch)
            torch.testing.assert_close(batch.data["pixel_values"], X[batch.indices])
            assert batch.data["ids"] == [f"s{i}" for i in batch.indices.tolist()]
            indices.append(batch.indices)
            weights.append(batch.weights)
            n_batches += 1
        assert n_batches == len(loader)
        out.append((torch.cat(indices), torch.cat(weights)))
    return out


@pytest.mark.parametrize("mode", ["refresh", "online"])
def test_workers_and_a_custom_collate_serve_the_selection_exactly(mode):
    X, y = _tensors()

    def graft_and_loader(**loader_options):
        graft = Graft(
            DictModel(_net()),
            DictRows(X, y),
            mode=mode,
            refresh_every=2,
            **_options(),
        )
        return graft, graft.dataloader(collate_fn=dict_collate, **loader_options)

    graft, loader = graft_and_loader(
        num_workers=2, persistent_workers=True, prefetch_factor=2
    )
    served = _served(graft, loader, 3, X)
    oracle = _served(*graft_and_loader(), 3, X)  # no workers: the same batches
    for (i, w), (i0, w0) in zip(served, oracle, strict=True):
        assert torch.equal(i, i0) and torch.equal(w, w0)
        assert len(set(i.tolist())) == len(i)  # no sample twice in an epoch
        assert not torch.all(w == 1)  # volume sampling's weights, not ones
    if mode == "refresh":
        weight_of = dict(
            zip(
                graft.selected_indices.tolist(),
                graft.selected_weights.tolist(),
                strict=True,
            )
        )
        i, w = served[2]  # epoch 2 trains on the round made at epoch 2
        assert sorted(i.tolist()) == sorted(weight_of)
        assert w.tolist() == [weight_of[j] for j in i.tolist()]
    fractions = [h["fraction"] for h in graft.history]
    assert fractions == [len(i) / N for i, _ in served]


def test_online_batches_are_each_batchs_selection_with_its_weights():
    from graft.loop._processes import seeded_generator

    X, y = _tensors()
    graft = Graft(DictModel(_net()), DictRows(X, y), mode="online", **_options())
    loader = graft.dataloader(collate_fn=dict_collate, num_workers=2)
    graft.set_epoch(0)
    full_batches = [list(b) for b in graft._plan]
    served = list(loader)  # no training step: the model does not change
    # The oracle: the selector on each full batch in the plain (x, y) format.
    net, gen = _net(), seeded_generator(3, 0, "select")
    assert len(served) == len(full_batches)
    for batch, rows in zip(served, full_batches, strict=True):
        sel = GraftSelector(0.3).select(net.eval(), X[rows], y[rows], gen)
        assert batch.indices.tolist() == [rows[i] for i in sel.indices.tolist()]
        torch.testing.assert_close(batch.weights, sel.weights, rtol=0, atol=0)


def test_an_own_dataloader_over_the_batch_sampler():
    X, y = _tensors()
    graft = Graft(_net(), TensorDataset(X, y), **_options())
    graft.set_epoch(0)

    class WithIndex(Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            return X[i], y[i], i

    loader = DataLoader(WithIndex(), batch_sampler=graft.batch_sampler)
    indices, weights = map(torch.Tensor.tolist, _selection(graft))
    expected = dict(zip(indices, weights, strict=True))
    seen = []
    for x, _, i in loader:
        torch.testing.assert_close(x, X[i])
        assert graft.weights_of(i).tolist() == [expected[j] for j in i.tolist()]
        seen += i.tolist()
    assert sorted(seen) == sorted(expected) and len(loader) == -(-len(seen) // 32)


def test_update_is_the_weighted_mean_and_refuses_a_reduced_loss():
    X, y = _tensors()
    model = _net()
    graft = Graft(model, TensorDataset(X, y), **_options())
    graft.set_epoch(0)
    batch = next(iter(graft.dataloader()))
    x, t = batch.data
    losses = F.cross_entropy(model(x), t, reduction="none")
    expected = sum(
        w * v for w, v in zip(batch.weights.tolist(), losses.tolist(), strict=True)
    )
    assert float(graft.update(batch, losses)) == pytest.approx(expected / len(t))
    model(x)
    with pytest.raises(ValueError, match="reduction='none'"):
        graft.update(batch, F.cross_entropy(model(x), t))
    with pytest.raises(ValueError, match=r"losses has shape \(5,\)"):
        graft.update(batch, losses[:5])
    with pytest.raises(TypeError, match="GraftBatch"):
        graft.update(batch.data, losses)
    graft.update(batch, losses)
    with pytest.raises(ValueError, match="no forward pass"):  # the hook saw none
        graft.update(batch, losses)


def test_the_record_matches_a_fresh_forward_pass_of_the_unchanged_model():
    X, y = _tensors()
    model = _net()
    graft = Graft(model, TensorDataset(X, y), **_options())
    for epoch in range(2):  # no optimizer step: the model does not change
        graft.set_epoch(epoch)
        for batch in graft.dataloader():
            x, t = batch.data
            graft.update(batch, F.cross_entropy(model(x), t, reduction="none"))
    seen = graft.selected_indices
    h, logits = penultimate(model, X)
    record = graft.record
    torch.testing.assert_close(
        record.loss[seen], F.cross_entropy(logits, y, reduction="none")[seen]
    )
    torch.testing.assert_close(record.embedding[seen], h[seen])
    assert record.embedding.dtype == torch.float32
    assert torch.all(record.epoch[seen] == 1)
    unseen = torch.ones(N, dtype=torch.bool)
    unseen[seen] = False
    assert torch.all(record.epoch[unseen] == -1)
    assert torch.isnan(record.loss[unseen]).all()
    assert record.nbytes == N * (4 * 16 + 4 + 8 + 8)  # loss, epoch, target
    assert torch.equal(record.target[seen], y[seen])
    assert torch.all(record.target[unseen] == -1)


def test_no_embeddings_are_recorded_for_a_random_selector():
    X, y = _tensors()
    model = _net()
    graft = Graft(model, TensorDataset(X, y), **_options(selector=RandomSelector(0.5)))
    graft.set_epoch(0)
    for batch in graft.dataloader():
        x, t = batch.data
        graft.update(batch, F.cross_entropy(model(x), t, reduction="none"))
    assert graft.record.embedding is None
    assert int((graft.record.epoch == 0).sum()) == len(graft.selected_indices)


def test_amp_and_gradient_accumulation():
    X, y = _tensors()
    model, oracle = _net(), _net()
    graft = Graft(model, TensorDataset(X, y), **_options())
    graft.set_epoch(0)
    batches = list(graft.dataloader())[:2]

    def loss_of(net, batch, record):
        x, t = batch.data
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = F.cross_entropy(net(x), t, reduction="none")
        if record:
            return graft.update(batch, losses) / 2
        return (batch.weights * losses).mean() / 2

    for batch in batches:  # two micro-batches, one optimizer step
        loss_of(model, batch, record=True).backward()
    for batch in batches:  # the oracle: the same sum without graft
        loss_of(oracle, batch, record=False).backward()
    for p, q in zip(model.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    seen = torch.cat([b.indices for b in batches])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, _ = penultimate(model, X[seen])
    assert graft.record.embedding.dtype == torch.float32
    torch.testing.assert_close(graft.record.embedding[seen], h.float())


def _run(epochs, *, resume_at=None, mode="refresh"):
    X, y = _tensors()
    data = DictRows(X, y)

    def parts(seed):
        model = DictModel(_net(seed))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        graft = Graft(model, data, mode=mode, refresh_every=2, **_options())
        return model, opt, graft, graft.dataloader(collate_fn=dict_collate)

    model, opt, graft, loader = parts(0)
    for epoch in range(epochs):
        if epoch == resume_at:
            saved = copy.deepcopy(
                {"model": model.state_dict(), "opt": opt.state_dict()}
                | {"graft": graft.state_dict()}
            )
            model, opt, graft, loader = parts(123)  # a fresh process
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            graft.load_state_dict(saved["graft"])
        graft.set_epoch(epoch)
        for batch in loader:
            out = model(batch.data["pixel_values"])
            losses = F.cross_entropy(out.logits, batch.data["labels"], reduction="none")
            loss = graft.update(batch, losses)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, graft


@pytest.mark.parametrize("mode", ["refresh", "online"])
def test_resume_is_bit_exact_with_the_record(mode):
    full, g_full = _run(5, mode=mode)
    resumed, g_res = _run(5, resume_at=3, mode=mode)
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    a, b = g_full.state_dict(), g_res.state_dict()
    for key in ("loss", "epoch", "embedding"):
        torch.testing.assert_close(
            a["record"][key], b["record"][key], rtol=0, atol=0, equal_nan=True
        )
    if mode == "refresh":
        assert torch.equal(a["selected_indices"], b["selected_indices"])
    assert [h["samples"] for h in g_full.history] == [
        h["samples"] for h in g_res.history
    ]


def _bad(state, **changes):
    bad = copy.deepcopy(state)
    for key, value in changes.items():
        if key == "record":
            bad["record"] = {**bad["record"], **value}
        else:
            bad[key] = value(bad[key]) if callable(value) else value
    return bad


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_samples": 100}, "dataset of 100 samples"),
        ({"selected_weights": lambda w: -w}, "finite and >= 0"),
        ({"selected_weights": lambda w: w * float("inf")}, "finite and >= 0"),
        ({"selected_indices": lambda i: i + N}, "outside the dataset"),
        ({"selected_indices": lambda i: i * 0}, "repeat a sample"),
        ({"selected_indices": lambda i: i.float()}, "1-D integer indices"),
        ({"record": {"loss": torch.zeros(N - 1)}}, "record does not fit"),
        ({"record": {"embedding": torch.full((N, 16), float("nan"))}}, "finite"),
        ({"seed": 4}, "seed=4"),
    ],
)
def test_bad_states_are_refused_and_change_nothing(changes, message):
    _, graft = _run(2)
    state = graft.state_dict()
    fresh = Graft(DictModel(_net()), DictRows(*_tensors()), **_options())
    with pytest.raises(ValueError, match=message):
        fresh.load_state_dict(_bad(state, **changes))
    assert fresh.selected_indices is None and fresh.record.loss is None
    with pytest.raises(ValueError, match="lacks"):
        fresh.load_state_dict({"seed": 3})


def test_the_loop_is_checked_before_it_starts():
    X, y = _tensors()
    graft = Graft(_net(), TensorDataset(X, y), **_options())
    with pytest.raises(TypeError, match="set_epoch"):
        len(graft.batch_sampler)
    with pytest.raises(RuntimeError, match="set_epoch"):
        next(iter(graft.dataloader()))
    with pytest.raises(ValueError, match=r"batch_size is decided.*Graft\(batch_size"):
        graft.dataloader(batch_size=8)
    with pytest.raises(ValueError, match=r"drop_last=\.\.\."):
        graft.dataloader(drop_last=True)
    with pytest.raises(TypeError, match="outputs must be None or a callable"):
        Graft(_net(), TensorDataset(X, y), outputs="logits")
    bare = Graft(_net(), TensorDataset(X), **_options())
    with pytest.raises(ValueError, match="pass targets="):
        bare.set_epoch(0)
    rows = Graft(DictModel(_net()), DictRows(X, y), **_options())
    rows.dataloader(collate_fn=lambda r: {"a": torch.zeros(len(r))})
    with pytest.raises(ValueError, match=r"cannot find the inputs in a dict.*'a'"):
        rows.set_epoch(0)

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x):
            return {"z": self.net(x)}

    odd = Graft(Odd(), TensorDataset(X, y), **_options())
    with pytest.raises(ValueError, match="pass outputs="):
        odd.set_epoch(0)


def test_loading_errors_say_where_and_keep_their_type():
    X, y = _tensors()
    graft = Graft(DictModel(_net()), DictRows(X, y), **_options())

    def broken(rows):
        raise subprocess.CalledProcessError(1, ["collate"])

    graft.dataloader(collate_fn=broken)
    with pytest.raises(subprocess.CalledProcessError) as info:
        graft.set_epoch(0)
    notes = " ".join(info.value.__notes__)
    assert "while loading samples for selection" in notes
    assert "selection round at epoch 0 failed" in notes
    assert graft.selected_indices is None


def test_drop_last_the_accessors_and_a_second_pass():
    X, y = _tensors()
    graft = Graft(
        _net(),
        TensorDataset(X, y),
        drop_last=True,
        **_options(selector=RandomSelector(0.5), batch_size=50),
    )
    graft.set_epoch(0)
    sizes = [len(b.indices) for b in graft.dataloader()]
    assert sizes == [50, 50] and len(graft.batch_sampler) == 2  # 120 selected
    graft.selected_weights.fill_(7)  # a copy: the selection is unchanged
    assert torch.all(graft.selected_weights == 1)
    with pytest.warns(UserWarning, match="iterated a second time"):
        list(graft.dataloader())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graft.set_epoch(1)
        list(graft.dataloader())


@pytest.mark.parametrize("mode", ["refresh", "online"])
def test_selection_keeps_each_layers_own_training_flag(mode):
    X, y = _tensors()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(D, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, C),
    )
    model.train()
    model[1].eval()  # frozen BatchNorm statistics, as in fine-tuning
    model[3].eval()
    graft = Graft(model, TensorDataset(X, y), mode=mode, **_options())
    graft.set_epoch(0)
    list(graft.dataloader())
    assert [m.training for m in model] == [True, False, True, False, True]


def test_a_loaded_state_is_planned_anew():
    X, y = _tensors()
    data, options = TensorDataset(X, y), _options(refresh_every=2)
    graft = Graft(_net(), data, **options)
    graft.set_epoch(0)
    saved = graft.state_dict()
    for epoch in (1, 2):
        graft.set_epoch(epoch)
    graft.load_state_dict(saved)
    graft.set_epoch(2)  # due again: the loaded round was made at epoch 0
    assert graft.history[-1]["ranks"] and torch.all(
        torch.cat([b.weights for b in graft.dataloader()]) > 0
    )
    saved["selected_weights"].fill_(5)  # the loaded state is a copy
    assert not torch.any(graft.selected_weights == 5)


def test_text_batches_keep_their_attention_mask():
    seen = []

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.head = nn.Linear(8, C)

        def forward(self, input_ids, attention_mask=None):
            seen.append(attention_mask is not None)
            return Output(self.head(self.embed(input_ids).mean(dim=1)))

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (64, 5), generator=g)
    rows = [
        {"input_ids": ids[i], "attention_mask": torch.ones(5), "labels": i % C}
        for i in range(64)
    ]
    graft = Graft(Text(), rows, **_options(batch_size=16))
    graft.set_epoch(0)
    assert seen and all(seen)


def test_drop_last_leaves_the_rounds_whole():
    X, y = _tensors()
    sizes = []
    for drop_last in (False, True):
        graft = Graft(
            _net(), TensorDataset(X, y), drop_last=drop_last, **_options(batch_size=50)
        )
        graft.set_epoch(0)
        sizes.append(len(graft.selected_indices))
        served = [len(b.indices) for b in graft.dataloader()]
        assert served == ([50] if drop_last else [50, len(graft.selected_indices) - 50])
    assert sizes[0] == sizes[1]


def test_online_accounting_of_an_epoch_cut_short():
    X, y = _tensors()
    graft = Graft(_net(), TensorDataset(X, y), mode="online", **_options())
    graft.set_epoch(0)
    for k, _ in enumerate(graft.dataloader()):
        if k == 2:
            break
    assert graft.history[-1]["samples"] == 3 * 9  # floor(0.3 * 32) in 3 batches
    assert graft.fraction_achieved() == pytest.approx(27 / N)


def test_a_last_linear_that_is_not_the_head_is_named():
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(16, C)
            self.inner = nn.Linear(D, 16)  # registered last, but not the head

        def forward(self, x):
            return self.head(torch.relu(self.inner(x)))

    graft = Graft(Backwards(), TensorDataset(*_tensors()), **_options())
    with pytest.raises(ValueError, match=r"'inner'.*pass layer='name'"):
        graft.set_epoch(0)
    graft = Graft(
        Backwards(),
        TensorDataset(*_tensors()),
        **_options(selector=per_batch_graft(0.3, layer="head")),
    )
    graft.set_epoch(0)
    assert len(graft.selected_indices) > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"history": None}, "history must be a list"),
        ({"selected_at": None}, "selected_at"),
        ({"selected_at": "0"}, "selected_at"),
        (
            {"selected_indices": lambda i: i[:0], "selected_weights": lambda w: w[:0]},
            "non-empty",
        ),
        ({"selected_indices": lambda i: i > 100}, "integer indices"),
        ({"selected_weights": lambda w: w.to(torch.complex64)}, "real weight"),
        ({"n_samples": "240"}, "'240' samples"),
    ],
)
def test_more_bad_states_are_refused_before_anything_changes(changes, message):
    _, graft = _run(2)
    state = graft.state_dict()
    fresh = Graft(DictModel(_net()), DictRows(*_tensors()), **_options())
    with pytest.raises(ValueError, match=message):
        fresh.load_state_dict(_bad(state, **changes))
    bad = dict(state, record=[1])
    with pytest.raises(ValueError, match="record must be a dict"):
        fresh.load_state_dict(bad)
    assert fresh.selected_indices is None and fresh.history == []


def test_a_state_without_embeddings_resumes_a_run_that_records_them():
    X, y = _tensors()
    model = _net()
    plain = Graft(model, TensorDataset(X, y), **_options(selector=RandomSelector(0.5)))
    plain.set_epoch(0)
    for batch in plain.dataloader():
        plain.update(
            batch,
            F.cross_entropy(model(batch.data[0]), batch.data[1], reduction="none"),
        )
    graft = Graft(model, TensorDataset(X, y), **_options(selector=RandomSelector(0.5)))
    graft.selector = per_batch_graft(0.5)
    graft.load_state_dict(plain.state_dict())
    graft.set_epoch(0)
    for batch in graft.dataloader():
        graft.update(
            batch,
            F.cross_entropy(model(batch.data[0]), batch.data[1], reduction="none"),
        )
    assert graft.record.embedding.shape == (N, 16)


def test_per_token_embeddings_are_averaged_and_flags_pass_through():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(D, C)

        def forward(self, x, scale=1.0):
            return self.head(scale * x.unsqueeze(1).expand(-1, 4, -1)).mean(dim=1)

    X, y = _tensors()
    model = Tokens()
    graft = Graft(
        model,
        TensorDataset(X, y),
        inputs=lambda b: {"x": b[0], "scale": 2.0},
        **_options(),
    )
    graft.set_epoch(0)  # take() passes the flag through to the pool
    batch = next(iter(graft.dataloader()))
    losses = F.cross_entropy(model(batch.data[0], 2.0), batch.data[1], reduction="none")
    graft.update(batch, losses)
    torch.testing.assert_close(
        graft.record.embedding[batch.indices], 2 * X[batch.indices]
    )


def test_the_models_hook_holds_no_reference_to_the_graft():
    import pickle

    X, _ = _tensors()
    model = _net()
    big = TensorDataset(torch.randn(20000, D), torch.randint(0, C, (20000,)))
    graft = Graft(model, big, **_options())
    graft._attach_hook()
    assert graft._hook is not None
    assert len(pickle.dumps(model)) < 20000  # the dataset alone is 800 kB
    copy.deepcopy(model)(X)  # an EMA copy's forward pass is not recorded
    assert graft._capture.embedding is None


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(3))


def test_bad_arguments_are_named():
    import numpy as np

    X, y = _tensors()
    data = TensorDataset(X, y)
    with pytest.raises(TypeError, match="selector must be a selector"):
        Graft(_net(), data, selector=0.3)
    with pytest.raises(TypeError, match="selector must be a selector"):
        Graft(_net(), data, selector=GraftSelector)
    with pytest.raises(ValueError, match=r"device \('gpu'\)"):
        Graft(_net(), data, device="gpu")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        Graft(lambda x: x, data)
    with pytest.raises(TypeError, match="map-style dataset"):
        Graft(_net(), Stream())
    with pytest.raises(TypeError, match="drop_last must be True or False"):
        Graft(_net(), data, drop_last="no")
    with pytest.raises(TypeError, match="seed must be an integer"):
        Graft(_net(), data, seed="abc")
    graft = Graft(_net(), data, **_options(batch_size=np.int64(32)))
    graft.set_epoch(np.int64(0))
    with pytest.raises(ValueError, match=r"in \[0, 239\]"):
        graft.weights_of(-1)
    with pytest.raises(TypeError, match="num_workers must be"):
        graft.dataloader(num_workers=2.0)
    floats = Graft(_net(), TensorDataset(X, y.float()), **_options())
    with pytest.raises(ValueError, match="integer class labels"):
        floats.set_epoch(0)


def test_a_datasets_batched_access_is_used():
    X, y = _tensors()

    class Batched(Dataset):
        """Only batched access, as a Hugging Face dataset has it (fast)."""

        def __len__(self):
            return N

        def __getitem__(self, i):
            raise AssertionError("rows must be fetched with __getitems__")

        def __getitems__(self, indices):
            return [(X[i], y[i]) for i in indices]

    graft = Graft(_net(), Batched(), **_options())
    graft.set_epoch(0)
    for batch in graft.dataloader(num_workers=2):
        torch.testing.assert_close(batch.data[0], X[batch.indices])
