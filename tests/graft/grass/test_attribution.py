"""Data attribution: compressed scores against exact-gradient scores and retraining."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.stats import spearmanr  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from graft._features import per_sample_gradients  # noqa: E402
from graft.grass._attribution import attribute  # noqa: E402
from graft.grass._compressors import FactGraSS, GraSS  # noqa: E402
from graft.harness import load_digits_split  # noqa: E402
from tests.graft.helpers import full_batch_fit  # noqa: E402

N_TRAIN, N_TEST, STEPS = 600, 40, 30


pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(X, y, steps=STEPS):
    """A 64-64-32-10 MLP, full-batch Adam from a fixed initialisation."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    return full_batch_fit(model, X, y, steps=steps, lr=1e-2)


@pytest.fixture(scope="module")
def digits():
    X_tr, X_te, y_tr, y_te = load_digits_split()
    as_t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
    train = (as_t(X_tr[:N_TRAIN], torch.float32), as_t(y_tr[:N_TRAIN], torch.int64))
    test = (as_t(X_te[:N_TEST], torch.float32), as_t(y_te[:N_TEST], torch.int64))
    return _fit(*train), train, test


@pytest.fixture(scope="module")
def exact(digits):
    """Exact per-sample gradients (torch.func) of the training and test sets."""
    model, train, test = digits
    return per_sample_gradients(model, *train), per_sample_gradients(model, *test)


class _Exact:
    """A compressor that returns the exact gradients (to check the plumbing)."""

    def __init__(self, model):
        self.model = model

    def per_sample_gradients(self, inputs, targets, loss_fn=None):
        return per_sample_gradients(self.model, inputs, targets)


def test_scores_rank_like_exact_gradient_scores(digits, exact):
    model, train, test = digits
    G, G_test = exact
    assert G.shape[1] > 6 * 1024  # FactGraSS compresses
    E = G_test @ G.T
    S = attribute(model, train, test)  # FactGraSS, proj_dim 1024
    assert S.shape == (N_TEST, N_TRAIN)
    assert spearmanr(S.flatten(), E.flatten())[0] >= 0.9
    per_test = [spearmanr(S[i], E[i])[0] for i in range(N_TEST)]
    assert np.mean(per_test) >= 0.9
    # The most helpful training sample is among the exact top 10 for most tests.
    top = S.argmax(1)
    hits = (E.argsort(1, descending=True)[:, :10] == top[:, None]).any(1)
    assert hits.float().mean() >= 0.8


def test_exact_compressor_gives_exact_scores_for_pairs_and_datasets(digits, exact):
    model, train, test = digits
    G, G_test = exact
    for data in (train, TensorDataset(*train)):
        S = attribute(model, data, test, compressor=_Exact(model), batch_size=97)
        torch.testing.assert_close(S, G_test @ G.T, rtol=1e-4, atol=1e-6)


def test_damped_scores_match_the_closed_form(digits):
    model, train, test = digits
    comp = FactGraSS(model, proj_dim=256, seed=3)
    Z = comp.per_sample_gradients(*train).double().numpy()
    Z_test = comp.per_sample_gradients(*test).double().numpy()
    lam = 1e-3
    F = Z.T @ Z / len(Z) + lam * np.eye(Z.shape[1])
    expected = Z_test @ np.linalg.solve(F, Z.T)
    S = attribute(model, train, test, compressor=comp, damping=lam)
    np.testing.assert_allclose(
        S.numpy(), expected, rtol=1e-3, atol=1e-3 * abs(expected).max()
    )
    # Strong damping: the curvature fades and lambda * scores -> inner products.
    big = 1e6
    S_big = attribute(model, train, test, compressor=comp, damping=big)
    np.testing.assert_allclose(
        big * S_big.numpy(),
        Z_test @ Z.T,
        rtol=1e-3,
        atol=1e-4 * abs(Z_test @ Z.T).max(),
    )


def test_damped_scores_rank_like_exact_influence(digits, exact):
    model, train, test = digits
    G, G_test = exact
    G, G_test = G.double(), G_test.double()
    comp = FactGraSS(model, proj_dim=1024, seed=0)
    S = attribute(model, train, test, compressor=comp, damping="auto")
    Z = comp.per_sample_gradients(*train).double()
    lam = 0.1 * float((Z * Z).sum()) / len(Z) / Z.shape[1]
    # Exact influence in parameter space through Woodbury:
    # (G^T G / n + lam I)^-1 = (I - G^T (n lam I + G G^T)^-1 G) / lam.
    n = len(G)
    K = G @ G.T
    cross = G_test @ G.T
    inner = torch.linalg.solve(n * lam * torch.eye(n, dtype=K.dtype) + K, K)
    E = (cross - cross @ inner) / lam
    assert spearmanr(S.flatten(), E.flatten())[0] >= 0.7


def test_removing_top_proponents_hurts_more_than_random(digits):
    """Retrain without a test point's top-k proponents, or without k random samples.

    On the test points the model is least sure of (the confident ones have a
    loss near 0 that no removal of 40 samples moves).
    """
    model, (X, y), (X_test, y_test) = digits
    k, points, draws = 40, 8, 2
    with torch.no_grad():
        losses = nn.functional.cross_entropy(model(X_test), y_test, reduction="none")
    chosen = torch.argsort(losses, descending=True)[:points]
    X_test, y_test, base = X_test[chosen], y_test[chosen], losses[chosen].numpy()
    S = attribute(model, (X, y), (X_test, y_test))
    rng = np.random.default_rng(0)

    def loss_without(i, drop):
        keep = torch.ones(len(y), dtype=torch.bool)
        keep[drop] = False
        retrained = _fit(X[keep], y[keep])
        with torch.no_grad():
            out = retrained(X_test[i : i + 1])
        return float(nn.functional.cross_entropy(out, y_test[i : i + 1]))

    top, rand = [], []
    for i in range(points):
        top.append(loss_without(i, torch.topk(S[i], k).indices))
        drops = [
            torch.as_tensor(rng.choice(len(y), k, replace=False)) for _ in range(draws)
        ]
        rand.append(np.mean([loss_without(i, d) for d in drops]))
    top, rand = np.array(top), np.array(rand)
    assert (top - base).mean() > 0.2 > (rand - base).mean()
    assert (top > rand).mean() >= 0.75


def test_model_mode_is_restored_and_grads_untouched(digits):
    model, train, test = digits
    model.train()
    try:
        attribute(model, (train[0][:10], train[1][:10]), (test[0][:3], test[1][:3]))
        assert model.training
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_grass_compressor(digits, exact):
    model, train, test = digits
    G, G_test = exact
    S = attribute(model, train, test, compressor=GraSS(model, proj_dim=1024))
    # Lower than FactGraSS: GraSS hashes the classifier head with the rest
    # (0.83 to 0.94 over seeds 0-4; FactGraSS keeps the head exact).
    assert spearmanr(S.flatten(), (G_test @ G.T).flatten())[0] >= 0.8


def test_bad_arguments(digits):
    model, train, test = digits
    with pytest.raises(ValueError, match="damping"):
        attribute(model, train, test, damping=-1.0)
    with pytest.raises(ValueError, match="damping"):
        attribute(model, train, test, damping="big")
    with pytest.raises(ValueError, match="batch_size"):
        attribute(model, train, test, batch_size=0)
    with pytest.raises(TypeError, match="compressor"):
        attribute(model, train, test, compressor=object())
    with pytest.raises(ValueError, match="train_data holds 600 inputs and 5"):
        attribute(model, (train[0], train[1][:5]), test)
    with pytest.raises(TypeError, match="test_data"):
        attribute(model, train, 3)
    with pytest.raises(TypeError, match="model"):
        attribute("model", train, test)
