"""NaN / inf and damping in GraSS, FactGraSS and attribute: clear errors, no NaN."""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graft import FactGraSS, GraSS, attribute  # noqa: E402
from graft.grass._compressors import _NonFiniteError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8


class SqrtAbs(nn.Module):
    """``sqrt(|h|)``: finite forward, NaN gradient wherever ``h`` is exactly 0."""

    def forward(self, h):
        return h.abs().sqrt()


def _mlp(middle=None):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), middle or nn.Tanh(), nn.Linear(6, 3))


def _data(n=N):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=gen), torch.arange(n) % 3


def _with_nan(X, row, value=float("nan")):
    X = X.clone()
    X[row, 1] = value
    return X


def _compressors(model):
    return (
        FactGraSS(model, proj_dim=16, seed=0),
        GraSS(model, proj_dim=16, seed=0, chunk_size=3),
    )


class _Table:
    """A compressor returning fixed rows: ``inputs`` hold the row numbers."""

    def __init__(self, Z):
        self.Z = torch.as_tensor(Z)

    def per_sample_gradients(self, inputs, targets, loss_fn=None):
        return self.Z[inputs.long()]


def _rows(n):
    return torch.arange(n, dtype=torch.float32), torch.zeros(n, dtype=torch.int64)


# -- NaN and inf in the data, losses and gradients --------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_inputs_name_the_samples(value):
    model = _mlp()
    X, y = _data()
    for comp in _compressors(model):
        with pytest.raises(ValueError, match=r"the inputs hold NaN or inf") as err:
            comp.per_sample_gradients(_with_nan(X, 5, value), y)
        assert "1 of the 8 samples of inputs[0:8] (indices [5])" in str(err.value)
        assert "drop those samples" in str(err.value)


def test_nonfinite_float_targets():
    model = _mlp()
    X, _ = _data()
    y = torch.zeros(N, 3)
    y[2, 0] = float("nan")

    def mse(out, t):
        return ((out - t) ** 2).sum(1)

    for comp in _compressors(model):
        with pytest.raises(ValueError, match=r"the targets hold .* \(indices \[2\]\)"):
            comp.per_sample_gradients(X, y, loss_fn=mse)


def test_nonfinite_losses_name_the_samples():
    model = _mlp()
    X, y = _data()

    def loss_fn(out, t):  # a division by 0 for the samples of class 1
        ce = nn.functional.cross_entropy(out, t, reduction="none")
        return ce / (t != 1)

    with pytest.raises(ValueError, match="per-sample losses hold NaN or inf") as err:
        FactGraSS(model, proj_dim=16).per_sample_gradients(X, y, loss_fn)
    assert "3 of the 8 samples" in str(err.value)
    assert "(indices [1, 4, 7])" in str(err.value)
    assert "check loss_fn for NaN" in str(err.value)
    # GraSS only sees the gradients (inside torch.func); they are caught there.
    with pytest.raises(ValueError, match=r"per-sample gradients hold .*\[1, 4, 7\]"):
        GraSS(model, proj_dim=16).per_sample_gradients(X, y, loss_fn)


def test_nan_gradient_with_finite_loss_names_the_layer():
    """sqrt at 0: the forward pass and the loss are finite, the gradient is not."""
    model = _mlp(SqrtAbs())
    with torch.no_grad():
        model[0].bias.zero_()
    X, y = _data()
    X[3] = 0.0  # h = W 0 + 0 = 0 at sample 3 only
    with torch.no_grad():
        losses = nn.functional.cross_entropy(model(X), y, reduction="none")
    assert torch.isfinite(losses).all()
    with pytest.raises(ValueError, match="per-sample gradients of layer '0'") as err:
        FactGraSS(model, proj_dim=16).per_sample_gradients(X, y)
    assert "1 of the 8 samples of inputs[0:8] (indices [3])" in str(err.value)
    assert "lower the learning rate" in str(err.value)
    # GraSS, chunk_size 3: the sample sits in the second chunk.
    with pytest.raises(ValueError, match=r"per-sample gradients hold") as err:
        GraSS(model, proj_dim=16, chunk_size=3).per_sample_gradients(X, y)
    assert "1 of the 3 samples of inputs[3:6] (indices [3])" in str(err.value)


def test_diverged_parameters_are_named():
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    X, y = _data()
    for comp in _compressors(model):
        with pytest.raises(ValueError, match=r"parameters \['2.weight'\]") as err:
            comp.per_sample_gradients(X, y)
        assert "training diverged" in str(err.value)


def test_attribute_names_the_data_set_and_global_indices():
    model = _mlp()
    X, y = _data(12)
    clean = (X, y)
    bad = (_with_nan(X, 9), y)
    with pytest.raises(ValueError, match=r"train_data\[8:12\] \(indices \[9\]\)"):
        attribute(model, bad, clean, batch_size=4)
    # The query (test) side, a NaN gradient in GraSS chunks inside the batches.
    model = _mlp(SqrtAbs())
    with torch.no_grad():
        model[0].bias.zero_()
    X_zero = X.clone()
    X_zero[9] = 0.0
    comp = GraSS(model, proj_dim=16, chunk_size=2)
    with pytest.raises(ValueError, match=r"test_data\[8:10\] \(indices \[9\]\)"):
        attribute(model, clean, (X_zero, y), batch_size=4, compressor=comp)
    dataset = torch.utils.data.TensorDataset(*bad)
    with pytest.raises(ValueError, match=r"train_data\[5:10\] \(indices \[9\]\)"):
        attribute(model, dataset, clean, batch_size=5, damping="auto")


def test_attribute_checks_a_custom_compressors_output():
    Z = np.ones((6, 3))
    Z[[1, 4], 2] = np.inf
    with pytest.raises(ValueError, match="compressed per-sample gradients") as err:
        attribute(_mlp(), _rows(6), _rows(2), compressor=_Table(Z), batch_size=4)
    assert "of the 4 samples of train_data[0:4] (indices [1])" in str(err.value)


def test_overflowing_scores_raise():
    Z = np.full((4, 8), 1e30, dtype=np.float32)  # finite, products overflow
    with pytest.raises(ValueError, match="overflow float32") as err:
        attribute(_mlp(), _rows(4), _rows(2), compressor=_Table(Z))
    assert "scale the loss down" in str(err.value)
    Z = np.full((4, 8), 1e200)  # float64: the curvature overflows
    with pytest.raises(ValueError, match="overflows float64"):
        attribute(_mlp(), _rows(4), _rows(2), compressor=_Table(Z), damping=1.0)


def test_the_error_pickles():
    err = _NonFiniteError("the inputs", [3, 5], 2, 4, "drop them", "train_data")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err)
    assert "2 of the 4 samples of train_data[2:6] (indices [3, 5])" in str(err)


def test_clean_data_is_unchanged():
    model = _mlp()
    X, y = _data()
    for comp in _compressors(model):
        Z = comp.per_sample_gradients(X, y)
        assert Z.shape == (N, 16) and torch.isfinite(Z).all()


# -- damping -------------------------------------------------------------------------


def _numpy_influence(Z_test, Z, lam):
    """``Z_test (Z^T Z / n + lam I)^{-1} Z^T`` with a plain numpy solve."""
    F = Z.T @ Z / len(Z) + lam * np.eye(Z.shape[1])
    return Z_test @ np.linalg.solve(F, Z.T)


def _auto(Z):
    return 0.1 * np.trace(Z.T @ Z / len(Z)) / Z.shape[1]


def test_auto_damping_on_a_rank_deficient_zero_heavy_case():
    """Most training samples have zero loss, so a zero gradient; rank < k."""
    model = _mlp()
    X, y = _data(12)
    test = _data(5)

    def loss_fn(out, t):  # only the samples of class 1 count
        return nn.functional.cross_entropy(out, t, reduction="none") * (t == 1)

    comp = FactGraSS(model, proj_dim=32, seed=0)
    S = attribute(model, (X, y), test, compressor=comp, loss_fn=loss_fn, damping="auto")
    Z = comp.per_sample_gradients(X, y, loss_fn).double().numpy()
    Z_test = comp.per_sample_gradients(*test, loss_fn).double().numpy()
    assert (np.abs(Z).sum(1) == 0).sum() == 8  # 8 of 12 rows are zero
    assert np.linalg.matrix_rank(Z) <= 4 < Z.shape[1]
    assert torch.isfinite(S).all()
    expected = _numpy_influence(Z_test, Z, _auto(Z))
    np.testing.assert_allclose(S.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_auto_damping_on_duplicate_columns():
    """An exactly singular curvature, independent of the model."""
    Z = np.array([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 3.0, 0.0]])
    S = attribute(_mlp(), _rows(4), _rows(4), compressor=_Table(Z), damping="auto")
    np.testing.assert_allclose(S.numpy(), _numpy_influence(Z, Z, _auto(Z)), rtol=1e-10)


def test_auto_damping_on_all_zero_gradients_is_a_clear_error():
    model = _mlp()
    data = _data()

    def zero_loss(out, t):
        return 0.0 * nn.functional.cross_entropy(out, t, reduction="none")

    with pytest.raises(ValueError, match=r"damping='auto'.*all zero") as err:
        attribute(model, data, data, loss_fn=zero_loss, damping="auto")
    assert "damping=None" in str(err.value)
    # A number or None is well defined there: every score is 0.
    for damping in (None, 1e-3):
        S = attribute(model, data, data, loss_fn=zero_loss, damping=damping)
        assert torch.equal(S, torch.zeros(N, N))


def test_too_small_damping_is_a_clear_error_not_linalg_error():
    Z = np.ones((4, 2))  # G^T G / n = [[1, 1], [1, 1]] exactly: singular
    with pytest.raises(ValueError, match=r"damping \(1e-300\) is too small") as err:
        attribute(_mlp(), _rows(4), _rows(4), compressor=_Table(Z), damping=1e-300)
    assert "damping='auto'" in str(err.value)
    assert not isinstance(err.value, torch.linalg.LinAlgError)


@pytest.mark.parametrize(
    ("damping", "match"),
    [
        (-1.0, r"got -1.0"),
        (0, r"got 0"),
        (float("nan"), r"got nan"),
        (float("inf"), r"got inf"),
        ("big", r"got 'big'; e.g. damping='auto'"),
    ],
)
def test_bad_damping_values(damping, match):
    model, data = _mlp(), _data()
    with pytest.raises(ValueError, match=r"damping must be None .*" + match):
        attribute(model, data, data, damping=damping)


@pytest.mark.parametrize("damping", [True, [1e-3], torch.tensor(1e-3), 1j])
def test_bad_damping_types(damping):
    model, data = _mlp(), _data()
    with pytest.raises(TypeError, match=r"damping must be None .*, got"):
        attribute(model, data, data, damping=damping)


def test_numpy_float_damping_matches_numpy_solve():
    Z = np.random.default_rng(0).standard_normal((6, 4))
    S = attribute(
        _mlp(), _rows(6), _rows(6), compressor=_Table(Z), damping=np.float64(0.5)
    )
    np.testing.assert_allclose(S.numpy(), _numpy_influence(Z, Z, 0.5), rtol=1e-10)


def test_compressors_check_targets_and_dtype_against_the_model():
    from graft import FactGraSS, GraSS

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)
    )
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    for compressor in (GraSS(model, proj_dim=4), FactGraSS(model, proj_dim=4)):
        with pytest.raises(ValueError, match=r"class indices in \[0, 5\].*3 outputs"):
            compressor.per_sample_gradients(
                x, torch.full((6,), 5).index_fill(0, torch.tensor([0]), 0)
            )
        with pytest.raises(TypeError, match=r"targets\.long\(\)"):
            compressor.per_sample_gradients(x, y.float())
        with pytest.raises(TypeError, match=r"inputs are torch.float64 but"):
            compressor.per_sample_gradients(x.double(), y)
        custom = compressor.per_sample_gradients(
            x, y.float(), lambda out, t: (out[:, 0] - t) ** 2
        )  # a custom loss decides its own targets
        assert torch.isfinite(custom).all()


def test_attribute_names_data_without_targets():
    from torch.utils.data import TensorDataset

    from graft import attribute

    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with pytest.raises(
        TypeError, match=r"train_data must be a dataset of \(input, target\)"
    ):
        attribute(model, TensorDataset(x), (x, y))
