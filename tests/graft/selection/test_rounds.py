"""Rounds from the record: random, InfoBatch and GRAFT read no data; corruptions."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset, TensorDataset  # noqa: E402

from graft import (  # noqa: E402
    Graft,
    GraftSelector,
    InfoBatchSelector,
    RandomSelector,
    SampleRecord,
)
from graft.harness import corrupt  # noqa: E402
from graft.selection import _rounds as rounds  # noqa: E402
from graft.selection._rounds import graft_round  # noqa: E402
from maxvol_kit._groups import allocate  # noqa: E402
from tests.graft.helpers import record_round  # noqa: E402


class _Guarded(Dataset):
    """A TensorDataset that can be closed: reading it then fails the test."""

    def __init__(self, X, y):
        self.X, self.y, self.closed = X, y, False

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        assert not self.closed, "a round read the data"
        return self.X[i], self.y[i]


def _train(graft, model, epochs, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        graft.set_epoch(epoch)
        for batch in graft.dataloader():
            x, t = batch.data
            loss = graft.update(batch, F.cross_entropy(model(x), t, reduction="none"))
            opt.zero_grad()
            loss.backward()
            opt.step()


def _setup(selector, n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    y = (X[:, :3]).argmax(dim=1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    data = _Guarded(X, y)
    graft = Graft(model, data, selector=selector, batch_size=32, refresh_every=1)
    return graft, model, data


@pytest.mark.parametrize(
    "selector",
    [RandomSelector(0.3), InfoBatchSelector(6), GraftSelector(0.3)],
    ids=["random", "infobatch", "graft"],
)
def test_rounds_from_the_record_read_no_data(selector):
    graft, model, data = _setup(selector)
    _train(graft, model, 3)
    trained = graft.history[-1]["samples"]
    data.closed = True  # training reads the selection; the round must not
    graft._selection = None  # force a round at the next set_epoch
    graft.set_epoch(3)
    assert graft.history[-1]["samples"] > 0 and trained > 0


def test_infobatch_prunes_only_below_mean_losses_and_rescales_them():
    n, r = 4000, 0.5
    record = SampleRecord(n)
    loss = torch.rand(n)
    loss[:100] = float("nan")  # never trained
    seen = torch.arange(100, n)
    record.write(seen, loss[100:], None, 0)
    selector = InfoBatchSelector(8, prune_ratio=r, delta=0.875)
    kept, weights, _ = selector.select_round(
        record_round(record, 1, torch.Generator().manual_seed(0))
    )
    mean = float(loss[100:].mean())
    well = torch.zeros(n, dtype=torch.bool)
    well[100:] = loss[100:] < mean
    is_kept = torch.zeros(n, dtype=torch.bool)
    is_kept[kept] = True
    assert is_kept[~well].all()  # unrecorded and high-loss samples always stay
    pruned_share = 1 - is_kept[well].float().mean()
    assert abs(float(pruned_share) - r) < 0.04  # binomial sd ~0.011
    torch.testing.assert_close(
        weights, torch.where(well[kept], 1 / (1 - r), 1.0).float()
    )


def test_infobatch_trains_on_everything_at_the_start_and_the_end():
    record = SampleRecord(100)
    record.write(torch.arange(100), torch.rand(100), None, 0)
    selector = InfoBatchSelector(8)
    gen = torch.Generator().manual_seed(0)
    assert len(
        InfoBatchSelector(8).select_round(record_round(SampleRecord(100), 0, gen))[0]
    )
    assert len(selector.select_round(record_round(record, 6, gen))[0]) < 100
    for epoch in (7, 8):  # from delta * epochs = 7 on
        kept, weights, _ = selector.select_round(record_round(record, epoch, gen))
        assert len(kept) == 100 and torch.all(weights == 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 8, "prune_ratio": 1.0}, "prune_ratio"),
        ({"epochs": 8, "delta": 0.0}, "delta"),
    ],
)
def test_infobatch_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfoBatchSelector(**kwargs)


def test_infobatch_has_no_online_mode():
    with pytest.raises(ValueError, match="mode='refresh'"):
        Graft(
            nn.Linear(2, 2),
            TensorDataset(torch.zeros(4, 2)),
            selector=InfoBatchSelector(2),
            mode="online",
        )


def _record(H, labels, seen=None):
    n = len(labels)
    record = SampleRecord(n)
    rows = torch.arange(n) if seen is None else seen
    record.write(rows, torch.rand(len(rows)), H[rows], 0, labels[rows])
    return record


def _groups_of(labels, seen_mask):
    return torch.where(seen_mask, labels, torch.full_like(labels, -2))


def test_graft_round_by_size_matches_allocate_and_is_unbiased():
    g = torch.Generator().manual_seed(0)
    n = 600
    labels = torch.randint(0, 3, (n,), generator=g)
    H = torch.randn(n, 12, generator=g)
    seen = torch.arange(0, n, 2)  # half recorded
    record = _record(H, labels, seen)
    chosen, weights, ranks = graft_round(
        record, 0.25, 0.1, g, allocation="size", weighting="unbiased"
    )
    assert len(chosen) == 150 and len(set(chosen.tolist())) == 150
    assert torch.all(weights > 0) and float(weights.mean()) == pytest.approx(1.0)
    group = _groups_of(labels, torch.arange(n) % 2 == 0)
    keys = sorted(set(group.tolist()))
    sizes = [int((group == c).sum()) for c in keys]
    got = [int((group[chosen] == c).sum()) for c in keys]
    assert got == allocate(sizes, 150).tolist()
    assert len(ranks) == len(keys)


def test_graft_round_by_loss_gives_lossy_classes_more_and_weighs_classes_by_budget():
    g = torch.Generator().manual_seed(0)
    n = 900
    labels = torch.arange(n) % 3
    H = torch.randn(n, 12, generator=g)
    record = SampleRecord(n)
    loss = torch.tensor([1.0, 2.0, 3.0])[labels]  # loss mass 1 : 2 : 3
    record.write(torch.arange(n), loss, H, 0, labels)
    chosen, weights, _ = graft_round(record, 0.3, 0.1, g)  # loss, class: defaults
    got = [int((labels[chosen] == c).sum()) for c in range(3)]
    assert sum(got) == 270
    for c, share in enumerate([1 / 6, 2 / 6, 3 / 6]):
        assert abs(got[c] - 270 * share) <= 1
        mine = weights[labels[chosen] == c]
        assert float(mine.mean()) == pytest.approx(1.0)


def test_graft_round_budgets_never_exceed_a_class():
    n = 300
    labels = (torch.arange(n) >= 20).long()  # class 0: 20 samples
    loss = torch.where(labels == 0, 100.0, 0.01)  # almost all loss mass there
    record = SampleRecord(n)
    record.write(torch.arange(n), loss, torch.randn(n, 6), 0, labels)
    chosen, _, _ = graft_round(record, 0.5, 0.1, torch.Generator())
    assert len(chosen) == 150 and len(set(chosen.tolist())) == 150
    assert int((labels[chosen] == 0).sum()) == 20


def test_graft_round_keeps_the_maxvol_rows_and_spreads_over_duplicates():
    # One class: 20 distinct directions, plus 200 near-copies of one sample.
    g = torch.Generator().manual_seed(1)
    distinct = torch.randn(200, 8, generator=g)
    copies = distinct[:1] + 1e-4 * torch.randn(200, 8, generator=g)
    H = torch.cat([distinct, copies])
    labels = torch.zeros(400, dtype=torch.long)
    record = _record(H, labels)
    hits = torch.zeros(400)
    for seed in range(20):
        chosen, _, _ = graft_round(
            record, 0.25, 0.0, torch.Generator().manual_seed(seed)
        )
        hits[chosen] += 1
    # A uniform draw would give the copies half the picks; the diversity
    # criterion gives them less (they share the leverage of one sample).
    share_of_copies = float(hits[200:].sum() / hits.sum())
    assert share_of_copies < 0.45


def test_graft_round_without_embeddings_is_uniform():
    record = SampleRecord(50)
    record.write(torch.arange(50), torch.rand(50), None, 0)
    chosen, weights, _ = graft_round(record, 0.2, 0.1, torch.Generator())
    assert len(chosen) == 10 and torch.all(weights == 1)


def test_corrupt_label_noise_flips_the_stated_share_to_other_classes():
    rng = np.random.default_rng(0)
    X = rng.random((1000, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 5, 1000)
    Xc, yc = corrupt(X, y, label_noise=0.3, seed=0)
    assert np.array_equal(Xc, X)
    assert int((yc != y).sum()) == 300


def test_corrupt_duplicates_copy_other_samples_with_their_labels():
    rng = np.random.default_rng(0)
    X = rng.random((500, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 500)
    Xc, yc = corrupt(X, y, duplicates=0.4, seed=0)
    changed = np.flatnonzero(np.abs(Xc - X).reshape(500, -1).max(axis=1) > 0)
    assert len(changed) == 200
    for i in changed[:20]:  # each copy is a shifted, noisy other sample
        dist = [
            min(
                np.abs(Xc[i] - np.roll(X[j], (a, b), axis=(-2, -1))).mean()
                for a in (-1, 0, 1)
                for b in (-1, 0, 1)
            )
            for j in np.setdiff1d(np.arange(500), changed)
        ]
        j = np.setdiff1d(np.arange(500), changed)[int(np.argmin(dist))]
        assert min(dist) < 0.06 and yc[i] == y[j]


def test_corrupt_imbalance_has_the_stated_ratio():
    y = np.repeat(np.arange(5), 200)
    X = np.zeros((1000, 1, 2, 2), dtype=np.float32)
    _, yc = corrupt(X, y, imbalance=10.0, seed=0)
    counts = np.bincount(yc, minlength=5)
    assert counts[0] == 200 and counts[-1] == 20
    assert np.all(np.diff(counts) < 0)


@pytest.mark.parametrize(
    "kwargs", [{"duplicates": 1.0}, {"label_noise": -0.1}, {"imbalance": 0.5}]
)
def test_corrupt_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        corrupt(np.zeros((4, 1, 2, 2)), np.arange(4) % 2, **kwargs)


def test_graft_round_on_identical_embeddings_draws_uniformly():
    H = torch.ones(40, 5)
    record = _record(H, torch.zeros(40, dtype=torch.long))
    chosen, weights, ranks = graft_round(record, 0.25, 0.1, torch.Generator())
    assert len(set(chosen.tolist())) == 10 and ranks == [0]
    assert torch.allclose(weights, torch.ones(10))


def test_graft_round_keeps_its_maxvol_rows_or_draws_everything():
    from maxvol_kit import fast_maxvol

    g = torch.Generator().manual_seed(3)
    H = torch.randn(300, 6, generator=g)
    labels = torch.zeros(300, dtype=torch.long)
    record = _record(H, labels)
    Hc = H.double() - H.double().mean(dim=0)
    U = torch.linalg.svd(Hc, full_matrices=False)[0]
    core = set(fast_maxvol(U.numpy()).indices.tolist())
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        chosen, _, ranks = graft_round(record, 0.1, 0.0, gen)  # eps 0: full rank
        assert ranks == [6] and core <= set(chosen.tolist())
    hits = [
        core
        <= set(
            graft_round(
                record, 0.1, 0.0, torch.Generator().manual_seed(s), maxvol_rows=False
            )[0].tolist()
        )
        for s in range(5)
    ]
    assert not all(hits)


def test_graft_round_at_full_rank_on_dependent_float32_embeddings():
    # A column that is a sum of two others: numerically rank 7 in float32.
    g = torch.Generator().manual_seed(0)
    H = torch.randn(1700, 8, generator=g)
    H[:, 7] = H[:, 0] + H[:, 1]
    record = _record(H, torch.zeros(1700, dtype=torch.long))
    chosen, _, ranks = graft_round(record, 0.3, 0.0, torch.Generator())
    assert ranks[0] <= 7 and len(set(chosen.tolist())) == 510


def _low_rank_rows(m, d, rank, seed):
    """Rows near a ``rank``-dim subspace (decaying spectrum), plus an offset."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0]
    scales = 2.0 ** -np.arange(rank)
    rows = (rng.standard_normal((m, rank)) * scales) @ basis.T
    rows += 1e-3 * rng.standard_normal((m, d)) + rng.standard_normal(d)
    return rows.astype(np.float32), basis


def test_centred_gram_is_m_times_the_covariance_up_to_gram_rows():
    H, _ = _low_rank_rows(500, 20, 4, 0)
    gram = rounds._centred_gram(H, rounds._mean(H), torch.Generator())
    oracle = np.cov(H.astype(np.float64), rowvar=False, bias=True) * len(H)
    # float32 rows: the uncentred Gram's roundoff, relative to the total variance
    np.testing.assert_allclose(gram, oracle, rtol=1e-4, atol=1e-5 * np.trace(oracle))


def test_sampled_gram_keeps_the_principal_subspace(monkeypatch):
    monkeypatch.setattr(rounds, "GRAM_ROWS", 300)
    H, basis = _low_rank_rows(5000, 40, 5, 1)
    gram = rounds._centred_gram(H, rounds._mean(H), torch.Generator().manual_seed(0))
    # PSD up to the float32 roundoff of the uncentred Gram
    assert np.linalg.eigvalsh(gram).min() > -1e-5 * np.trace(gram)
    top = np.linalg.eigh(gram)[1][:, -5:]
    # The cosines of the principal angles to the true subspace, near 1.
    cosines = np.linalg.svd(top.T @ basis, compute_uv=False)
    assert cosines.min() > 0.99
    exact = np.cov(H.astype(np.float64), rowvar=False, bias=True) * len(H)
    assert np.trace(gram) == pytest.approx(np.trace(exact), rel=0.15)


def test_randomized_top_eigenpairs_match_lapack_and_fall_back_when_short():
    rng = np.random.default_rng(2)
    d = 128
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    lam = 0.7 ** np.arange(d)
    gram = (Q * lam) @ Q.T
    total = float(np.trace(gram))
    values, vectors = rounds._top_eigen(gram, 0.1, total, torch.Generator())
    assert len(values) == rounds.SKETCH
    np.testing.assert_allclose(values[:10], lam[:10], rtol=1e-3)
    # Each leading vector is the true one up to sign.
    cosines = np.abs(np.sum(vectors[:, :10] * Q[:, :10], axis=0))
    assert cosines.min() > 0.999
    # eps = 0 asks for every direction: the full eigendecomposition.
    values, vectors = rounds._top_eigen(gram, 0.0, total, torch.Generator())
    assert len(values) == d
    np.testing.assert_allclose(values, lam, rtol=1e-6, atol=1e-12)


def test_groups_are_the_rows_of_each_label_in_order():
    labels = np.array([3, -2, 3, 0, -2, 7, 0, 3])
    classes, counts, groups = rounds._groups(labels)
    assert classes.tolist() == [-2, 0, 3, 7] and counts.tolist() == [2, 2, 3, 1]
    for c, rows in zip(classes, groups, strict=True):
        assert rows.tolist() == np.flatnonzero(labels == c).tolist()


def test_maxvol_rows_of_the_leverage_pool_keep_the_volume_of_all_rows():
    from maxvol_kit import maxvol

    rng = np.random.default_rng(4)
    for _ in range(5):
        Z = rng.standard_normal((4000, 10)).astype(np.float32)
        lev = np.einsum("ij,ij->i", Z, Z)
        rows = rounds._maxvol_rows(Z, lev)
        assert len(set(rows.tolist())) == 10
        pooled = np.linalg.slogdet(Z[rows].astype(np.float64))[1]
        # the certified local maximum over all 4000 rows (|C| <= 1.05)
        assert pooled >= maxvol(Z.astype(np.float64)).log_volume - 0.5
    small = rng.standard_normal((100, 10)).astype(np.float32)  # 100 <= POOL * 10
    lev = np.einsum("ij,ij->i", small, small)
    rows = rounds._maxvol_rows(small, lev)  # every row a candidate: dominant
    coefficients = small.astype(np.float64) @ np.linalg.inv(small[rows].astype(float))
    assert np.abs(coefficients).max() <= 1.05 + 1e-6


def test_maxvol_rows_when_the_largest_leverages_span_fewer_directions():
    # 400 outliers with large leverage, all zero in the first two coordinates:
    # the pool of the largest leverages has rank r - 2, all rows have rank r.
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((3000, 20))
    Z[:400, :2] = 0
    Z[:400, 2:] *= 10
    lev = np.einsum("ij,ij->i", Z, Z)
    assert np.linalg.matrix_rank(Z[np.argsort(-lev)[: rounds.POOL * 20]]) < 20
    rows = rounds._maxvol_rows(Z, lev)
    coefficients = Z @ np.linalg.inv(Z[rows])
    assert np.abs(coefficients).max() <= 1.05 + 1e-9
