"""Graft under torch.distributed: 2 ranks (gloo, CPU) against one process.

One spawn of two processes per selection kind runs everything the tests
check: an uninterrupted DDP run, and a run checkpointed after two epochs and
resumed in fresh objects from rank 0's checkpoint. The kinds: GRAFT per
batch (each rank selects within its shard) and GRAFT's round from the
record (every rank computes the whole round from the gathered record and
keeps every world_size-th sample). The same per-batch experiment in this
process (world size 1) is the single-process reference.
"""

import math
import os
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
if not torch.distributed.is_available():  # pragma: no cover - build dependent
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from graft import Graft, GraftSelector, train_epoch  # noqa: E402
from graft.harness import load_digits_split  # noqa: E402
from tests.graft.helpers import per_batch_graft  # noqa: E402

EPOCHS = 6
RESUME_AT = 2
FRACTION = 0.3
BATCH = 32
N_TRAIN = 1000
WORLD = 2


def _data():
    X_tr, X_te, y_tr, y_te = load_digits_split(random_state=0)

    def tensors(X, y):
        return TensorDataset(torch.tensor(X, dtype=torch.float32), torch.tensor(y))

    return tensors(X_tr[:N_TRAIN], y_tr[:N_TRAIN]), tensors(X_te, y_te)


def _parts(world_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    wrapped = DistributedDataParallel(model) if world_size > 1 else model
    opt = torch.optim.Adam(wrapped.parameters(), lr=0.03)
    return model, wrapped, opt


def _graft(wrapped, train, kind="batch"):
    # eps=0: GRAFT keeps its whole budget, floor(0.3 * batch), in every batch.
    selector = (
        per_batch_graft(FRACTION, eps=0.0)
        if kind == "batch"
        else GraftSelector(FRACTION)  # the round from the record
    )
    return Graft(
        wrapped,
        train,
        selector=selector,
        batch_size=BATCH,
        refresh_every=2,
        seed=3,
    )


def _accuracy(model, test):
    X, y = test.tensors
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).float().mean())


def _shard(graft, epoch):
    """The dataset indices this rank selects from in the round of ``epoch``."""
    batches = graft._batches(torch.arange(len(graft.dataset)), epoch, "select")
    return sorted(i for batch in batches for i in batch)


def _experiment(world_size, ckpt, kind="batch"):
    """Uninterrupted and resumed runs; everything the tests look at."""
    train, test = _data()
    model, wrapped, opt = _parts(world_size)
    graft = _graft(wrapped, train, kind)
    rounds, record = {}, None
    for epoch in range(EPOCHS):
        if epoch == EPOCHS - 1:  # set_epoch gathers the ranks' records
            graft.set_epoch(epoch)
            record = graft.record.state_dict()
        train_epoch(graft, opt, epoch)
        if graft._selected_at == epoch:
            rounds[epoch] = {
                "union": graft._selection[0].tolist(),
                "counts": list(graft._process_counts),
                "shard": _shard(graft, epoch),
            }
    out = {
        "rounds": rounds,
        "record": record,
        "history": [
            {k: h[k] for k in ("samples", "process_samples", "fraction")}
            for h in graft.history
        ],
        "fraction": graft.fraction_achieved(),
        "accuracy": _accuracy(model, test),
        "params": [p.detach().clone() for p in model.parameters()],
    }
    # The same run, stopped after RESUME_AT epochs and resumed from rank 0's
    # checkpoint in fresh objects.
    model, wrapped, opt = _parts(world_size)
    graft = _graft(wrapped, train, kind)
    for epoch in range(RESUME_AT):
        train_epoch(graft, opt, epoch)
    graft_state = graft.state_dict()  # on every rank: it gathers the record
    if world_size == 1 or dist.get_rank() == 0:
        state = {"model": model.state_dict(), "opt": opt.state_dict()}
        torch.save({**state, "graft": graft_state}, ckpt)
    if world_size > 1:
        dist.barrier()
    saved = torch.load(ckpt, weights_only=False)
    model, wrapped, opt = _parts(world_size)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    graft = _graft(wrapped, train, kind)
    graft.load_state_dict(saved["graft"])
    for epoch in range(RESUME_AT, EPOCHS):
        train_epoch(graft, opt, epoch)
    out["resumed_params"] = [p.detach().clone() for p in model.parameters()]
    out["resumed_fraction"] = graft.fraction_achieved()
    return out


def _worker(rank, world_size, store, out_dir, kind):
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # no network needed
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    try:
        result = _experiment(world_size, os.path.join(out_dir, "ckpt.pt"), kind)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # both ranks are done communicating before teardown
    finally:
        dist.destroy_process_group()
    # The results are saved: leave without the interpreter's exit handlers,
    # where gloo's threads can abort a finished rank ("terminate called
    # without an active exception", seen now and then on a busy machine).
    os._exit(0)


def _spawn(tmp_dir, kind="batch", timeout=120):
    store = os.path.join(tmp_dir, "store")
    ctx = mp.spawn(
        _worker, args=(WORLD, store, tmp_dir, kind), nprocs=WORLD, join=False
    )
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {WORLD} ranks did not finish in {timeout} s")
    return [
        torch.load(os.path.join(tmp_dir, f"rank{r}.pt"), weights_only=False)
        for r in range(WORLD)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ranks = _spawn(str(tmp_path_factory.mktemp("ddp")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank, and quick on a busy machine
    try:
        single = _experiment(1, str(tmp_path_factory.mktemp("one") / "ckpt.pt"))
    finally:
        torch.set_num_threads(threads)
    return ranks, single


def test_distributed_ranks_select_disjoint_parts_of_their_own_shards(runs):
    ranks, _ = runs
    for epoch, first in ranks[0]["rounds"].items():
        # Every rank holds the same union of the gathered selections.
        assert all(r["rounds"][epoch]["union"] == first["union"] for r in ranks)
        shards = [set(r["rounds"][epoch]["shard"]) for r in ranks]
        assert set.union(*shards) == set(range(N_TRAIN))
        assert sum(len(s) for s in shards) == N_TRAIN  # the shards are disjoint
        union, counts = first["union"], first["counts"]
        assert sum(counts) == len(union) and len(set(union)) == len(union)
        start = 0
        for rank, count in enumerate(counts):
            part = set(union[start : start + count])
            assert part <= shards[rank]  # rank r selected within its shard
            start += count


def test_distributed_accounting_counts_the_union(runs):
    ranks, _ = runs
    union = {e: len(r["union"]) for e, r in ranks[0]["rounds"].items()}
    for epoch, h in enumerate(ranks[0]["history"]):
        size = union[max(e for e in union if e <= epoch)]
        # Global samples: the union, each trained once, shared by the ranks.
        assert all(r["history"][epoch]["samples"] == size for r in ranks)
        assert sum(r["history"][epoch]["process_samples"] for r in ranks) == size
        assert h["fraction"] == pytest.approx(size / N_TRAIN)
    assert all(r["fraction"] == ranks[0]["fraction"] for r in ranks)


def test_distributed_record_holds_every_ranks_samples_on_every_rank(runs):
    ranks, single = runs
    last = EPOCHS - 2  # the epoch before the record was read
    for out in [*ranks, single]:
        epochs = out["record"]["epoch"]
        trained = set(
            out["rounds"][max(e for e in out["rounds"] if e <= last)]["union"]
        )
        assert set(torch.nonzero(epochs == last)[:, 0].tolist()) == trained
        assert out["record"]["embedding"].shape == (N_TRAIN, 32)
    for key in ("loss", "epoch", "embedding"):
        torch.testing.assert_close(
            ranks[0]["record"][key],
            ranks[1]["record"][key],
            rtol=0,
            atol=0,
            equal_nan=True,
        )


def test_distributed_fraction_matches_one_process_within_rounding(runs):
    ranks, single = runs
    # Each batch keeps floor(0.3 * its size): rounding loses under one sample
    # per batch, and the two runs cut the data into batches differently.
    batches = math.ceil(N_TRAIN / BATCH)
    assert 0.3 - batches / N_TRAIN < single["fraction"] <= 0.3
    assert abs(ranks[0]["fraction"] - single["fraction"]) <= batches / N_TRAIN


def test_distributed_resume_from_a_checkpoint_is_exact(runs):
    ranks, single = runs
    for out in [*ranks, single]:
        for a, b in zip(out["params"], out["resumed_params"], strict=True):
            assert torch.equal(a, b)
        assert out["resumed_fraction"] == out["fraction"]
    # DDP keeps the ranks' models identical.
    for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
        assert torch.equal(a, b)


def test_distributed_accuracy_close_to_one_process(runs):
    ranks, single = runs
    # Chance is 0.1; both runs learn, and to about the same accuracy (DDP
    # takes half as many optimizer steps, each on twice the samples).
    assert single["accuracy"] > 0.8
    assert ranks[0]["accuracy"] > 0.8
    assert abs(ranks[0]["accuracy"] - single["accuracy"]) < 0.08


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [3, 7, 64, 65, 97, 130])
def test_distributed_rank_batches_are_disjoint_equal_in_number_and_never_empty(
    world_size, n
):
    from graft.loop._processes import process_batches

    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    per_rank = [process_batches(order, 16, r, world_size) for r in range(world_size)]
    assert len({len(b) for b in per_rank}) == 1  # DDP needs equal step counts
    assert all(len(batch) >= 1 for b in per_rank for batch in b)
    flat = [i for b in per_rank for batch in b for i in batch]
    assert sorted(flat) == list(range(n))  # disjoint, and nothing left out
    if world_size == 1:
        assert per_rank[0] == [order[k : k + 16].tolist() for k in range(0, n, 16)]


def test_distributed_rank_and_world_size_are_checked():
    train, _ = _data()
    model = nn.Linear(64, 10)
    with pytest.raises(ValueError, match=r"rank \(2\) and world_size \(2\)"):
        Graft(model, train, process_rank=2, world_size=2)
    with pytest.raises(ValueError, match="init_process_group"):
        Graft(model, train, process_rank=1, world_size=2)
    with pytest.raises(TypeError, match="world_size must be a positive integer"):
        Graft(model, train, process_rank=0, world_size=2.0)
    graft = Graft(model, train)
    assert (graft.process_rank, graft.world_size) == (0, 1)


@pytest.fixture(scope="module")
def record_runs(tmp_path_factory):
    return _spawn(str(tmp_path_factory.mktemp("ddp-record")), "record")


def test_distributed_record_round_is_one_round_shared_by_the_ranks(record_runs):
    budget = math.floor(FRACTION * N_TRAIN)
    first = record_runs[0]
    assert len(first["rounds"]) >= EPOCHS // 2  # a round every refresh_every
    for epoch, round_ in first["rounds"].items():
        # Both ranks computed the same round from the same gathered record.
        assert all(r["rounds"][epoch]["union"] == round_["union"] for r in record_runs)
        union, counts = round_["union"], round_["counts"]
        assert len(union) == budget and len(set(union)) == budget
        assert sum(counts) == budget and max(counts) - min(counts) <= 1
    for epoch in range(EPOCHS):
        assert all(r["history"][epoch]["samples"] == budget for r in record_runs)
        assert (
            sum(r["history"][epoch]["process_samples"] for r in record_runs) == budget
        )
    for key in ("loss", "epoch", "embedding"):
        torch.testing.assert_close(
            first["record"][key],
            record_runs[1]["record"][key],
            rtol=0,
            atol=0,
            equal_nan=True,
        )


def test_distributed_record_round_resumes_exactly(record_runs):
    for out in record_runs:
        for a, b in zip(out["params"], out["resumed_params"], strict=True):
            assert torch.equal(a, b)
    for a, b in zip(record_runs[0]["params"], record_runs[1]["params"], strict=True):
        assert torch.equal(a, b)
    assert record_runs[0]["accuracy"] > 0.8
