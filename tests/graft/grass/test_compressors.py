"""GraSS / FactGraSS against exact per-sample gradients (a plain autograd loop)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graft.grass._compressors import (  # noqa: E402
    FactGraSS,
    GaussianProjection,
    GraSS,
    RandomMask,
    SparseJL,
    hookable_layers,
)
from graft.harness import TransformerBlock  # noqa: E402
from maxvol_kit.utils import dense_projection, sparse_sign_projection  # noqa: E402
from tests.conftest import needs_gpu  # noqa: E402
from tests.graft.helpers import full_batch_fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def TinyBlock():
    return TransformerBlock(d=32, heads=2, hidden=96, n_classes=5)


def _mlp(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 5)
    ).to(dtype)


def _cnn(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 2, stride=2, bias=False),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 5),
    ).to(dtype)


def _classes(n, shape, n_classes=5, seed=1, dtype=torch.float32):
    """Inputs around class means, so gradients of a class agree."""
    g = torch.Generator().manual_seed(seed)
    means = 0.5 * torch.randn(n_classes, *shape, generator=g, dtype=dtype)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return means[y] + torch.randn(n, *shape, generator=g, dtype=dtype), y


def _trained(model, x, y, steps=60):
    return full_batch_fit(model, x, y, steps=steps, lr=3e-3)


def _exact(model, x, y, layers=None):
    """Per-sample gradients by a loop: hooked layers as [W | b] rows, or all."""
    modules = dict(model.named_modules())
    if layers is None:
        params = list(model.parameters())
    else:
        params = [p for n in layers for p in modules[n].parameters()]
    rows = []
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        if layers is None:
            rows.append(torch.cat([g.flatten() for g in grads]))
            continue
        it, parts = iter(grads), []
        for n in layers:
            if isinstance(modules[n], (nn.LayerNorm, nn.RMSNorm)):  # [scale, shift]
                parts += [next(it).flatten() for _ in modules[n].parameters()]
                continue
            W = next(it).reshape(modules[n].weight.shape[0], -1)
            cols = [W, next(it)[:, None]] if modules[n].bias is not None else [W]
            parts.append(torch.cat(cols, 1).flatten())
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def _gram_errors(Z, G):
    """(relative Frobenius error of Z Z^T, correlation of off-diagonal entries)."""
    A, B = (Z @ Z.T).double(), (G @ G.T).double()
    off = ~torch.eye(len(A), dtype=torch.bool)
    corr = np.corrcoef(A[off].numpy(), B[off].numpy())[0, 1]
    return float(torch.linalg.norm(A - B) / torch.linalg.norm(B)), float(corr)


@pytest.fixture(scope="module")
def mlp_case():
    x, y = _classes(200, (32,))
    model = _trained(_mlp(), x[:136], y[:136])
    return model, x[136:], y[136:]


@pytest.fixture(scope="module")
def block_case():
    torch.manual_seed(0)
    x, y = _classes(200, (6, 32))
    model = _trained(TinyBlock(), x[:136], y[:136])
    return model, x[136:], y[136:]


# -- the maps ----------------------------------------------------------------------


def test_sparse_jl_and_gaussian_are_the_maxvol_kit_maps():
    X = torch.randn(7, 300, dtype=torch.float64)
    torch.testing.assert_close(
        SparseJL(300, 40, random_state=3)(X),
        sparse_sign_projection(X, 40, random_state=3),
    )
    torch.testing.assert_close(
        GaussianProjection(300, 40, random_state=3)(X),
        dense_projection(X, 40, random_state=3),
    )
    # The index_add_ path (wide maps) is the same map as the dense one.
    wide = SparseJL(5000, 300, random_state=4)
    X = torch.randn(3, 5000, dtype=torch.float64)
    torch.testing.assert_close(wide(X), X @ wide._dense())


def test_sparse_jl_and_mask_are_unbiased():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 500, generator=g, dtype=torch.float64)
    y = 0.6 * x + y  # a clearly nonzero inner product
    exact = float(x @ y)
    for make in (
        lambda s: SparseJL(500, 32, random_state=s),
        lambda s: RandomMask(500, 50, random_state=s),
    ):
        est = np.array([float(make(s)(x) @ make(s)(y)) for s in range(600)])
        se = est.std() / np.sqrt(len(est))
        assert abs(est.mean() - exact) < 4 * se
    # Variance bound of the sparse JL: Var <Px, Py> <= 2 |x|^2 |y|^2 / k.
    est = np.array(
        [
            float(
                SparseJL(500, 32, random_state=s)(x)
                @ SparseJL(500, 32, random_state=s)(y)
            )
            for s in range(600)
        ]
    )
    assert est.var() <= 2 * float(x @ x) * float(y @ y) / 32


# -- FactGraSS ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "block", "cnn", "rmsnorm"])
def test_factgrass_is_exact_at_full_dimension(kind):
    """With proj_dim = all hooked entries every map is the identity."""
    if kind == "rmsnorm":
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(32, 8), nn.RMSNorm(8), nn.Flatten(), nn.Linear(40, 5)
        ).double()
        x, y = _classes(6, (5, 32), dtype=torch.float64)
    elif kind == "mlp":
        model = _mlp(torch.float64)
        x, y = _classes(6, (32,), dtype=torch.float64)
    elif kind == "block":
        torch.manual_seed(0)
        model = TinyBlock().double()
        x, y = _classes(6, (5, 32), dtype=torch.float64)
    else:
        model = _cnn()
        x, y = _classes(6, (2, 6, 6), dtype=torch.float64)
    layers = hookable_layers(model)
    G = _exact(model, x, y, layers)
    big = 10**6
    comp = FactGraSS(model, proj_dim=G.shape[1], mask_in=big, mask_out=big)
    torch.testing.assert_close(comp.per_sample_gradients(x, y), G)


@pytest.mark.parametrize("case", ["mlp_case", "block_case"])
def test_factgrass_preserves_inner_products(case, request):
    model, x, y = request.getfixturevalue(case)
    G = _exact(model, x, y, hookable_layers(model))
    assert G.shape[1] > 8 * 1024  # a real compression
    Z = FactGraSS(model, proj_dim=1024, seed=0).per_sample_gradients(x, y)
    assert Z.shape == (len(y), 1024)
    fro, corr = _gram_errors(Z, G)
    assert corr >= 0.85
    # The Frobenius error is the sharper check: the exact gradients of the
    # final layer alone reach a correlation above 0.8 here, but an error of 0.4.
    assert fro <= 0.3


def test_factgrass_is_unbiased_over_seeds(block_case):
    """The mean over seeds converges to the exact Gram; a bias would not shrink."""
    model, x, y = block_case
    x, y = x[:16], y[:16]
    G = _exact(model, x, y, hookable_layers(model))
    grams = [
        (lambda Z: Z @ Z.T)(
            FactGraSS(model, proj_dim=32, seed=s, oversample=2).per_sample_gradients(
                x, y
            )
        )
        for s in range(24)
    ]
    exact = G @ G.T
    single = np.median([float(torch.linalg.norm(A - exact)) for A in grams])
    mean = float(torch.linalg.norm(torch.stack(grams).mean(0) - exact))
    assert mean < 0.45 * single  # about single / sqrt(24) if unbiased


def test_grass_preserves_inner_products(mlp_case):
    model, x, y = mlp_case
    G = _exact(model, x, y)
    for kwargs in (
        {},
        {"mask_dim": 4096},
        {"projection": "gaussian", "mask_dim": 4096},
    ):
        Z = GraSS(model, proj_dim=1024, seed=0, chunk_size=16, **kwargs)
        fro, corr = _gram_errors(Z.per_sample_gradients(x, y), G)
        assert corr >= 0.85, kwargs
        assert fro <= 0.3, kwargs


@pytest.mark.parametrize("kind", [GraSS, FactGraSS])
def test_same_seed_same_output_other_seed_differs(kind, mlp_case):
    model, x, y = mlp_case
    a = kind(model, proj_dim=128, seed=5).per_sample_gradients(x[:8], y[:8])
    b = kind(model, proj_dim=128, seed=5).per_sample_gradients(x[:8], y[:8])
    c = kind(model, proj_dim=128, seed=6).per_sample_gradients(x[:8], y[:8])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def _no_hooks(model):
    return all(
        not m._forward_hooks
        and not m._forward_pre_hooks
        and not m._backward_hooks
        and not m._backward_pre_hooks
        for m in model.modules()
    )


def test_hooks_removed_and_grads_untouched(mlp_case):
    model, x, y = mlp_case
    first, *rest = model.parameters()
    marker = torch.full_like(first, 7.0)
    first.grad = marker.clone()
    FactGraSS(model, proj_dim=64).per_sample_gradients(x[:4], y[:4])
    GraSS(model, proj_dim=64).per_sample_gradients(x[:4], y[:4])
    assert _no_hooks(model)
    torch.testing.assert_close(first.grad, marker)
    assert all(p.grad is None for p in rest)
    first.grad = None


def test_hooks_removed_when_the_forward_raises(mlp_case):
    model, x, y = mlp_case
    comp = FactGraSS(model, proj_dim=64)
    with pytest.raises(RuntimeError):
        comp.per_sample_gradients(x[:4, :7], y[:4])  # wrong width
    assert _no_hooks(model)

    def bad_loss(out, targets):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        comp.per_sample_gradients(x[:4], y[:4], bad_loss)
    assert _no_hooks(model)


def test_factgrass_under_no_grad_and_a_custom_loss(mlp_case):
    model, x, y = mlp_case
    comp = FactGraSS(model, proj_dim=64)
    with torch.no_grad():
        a = comp.per_sample_gradients(x[:4], y[:4])

    def loss(out, targets):  # twice the cross-entropy: twice the gradient
        return 2 * nn.functional.cross_entropy(out, targets, reduction="none")

    torch.testing.assert_close(comp.per_sample_gradients(x[:4], y[:4], loss), 2 * a)


def test_bad_arguments_have_clear_errors(mlp_case):
    model, x, y = mlp_case
    for bad in (0, -3):
        with pytest.raises(ValueError, match="proj_dim"):
            FactGraSS(model, proj_dim=bad)
        with pytest.raises(ValueError, match="proj_dim"):
            GraSS(model, proj_dim=bad)
    with pytest.raises(TypeError, match="proj_dim"):
        FactGraSS(model, proj_dim=2.5)
    with pytest.raises(ValueError, match=r"proj_dim .* exceeds"):
        FactGraSS(model, proj_dim=10**7)
    with pytest.raises(ValueError, match=r"'nope'.*not a module"):
        FactGraSS(model, proj_dim=16, layers=["0", "nope"])
    with pytest.raises(ValueError, match="'1', a ReLU"):
        FactGraSS(model, proj_dim=16, layers=["1"])
    with pytest.raises(ValueError, match=r"no nn.Linear.*GraSS"):
        FactGraSS(nn.Sequential(nn.Embedding(5, 3)), proj_dim=2)
    with pytest.raises(ValueError, match="seed"):
        FactGraSS(model, proj_dim=16, seed=-1)
    with pytest.raises(TypeError, match="model"):
        FactGraSS("model", proj_dim=16)
    with pytest.raises(ValueError, match="reduction='none'"):
        FactGraSS(model, proj_dim=16).per_sample_gradients(
            x[:4], y[:4], nn.functional.cross_entropy
        )
    with pytest.raises(ValueError, match="same"):
        FactGraSS(model, proj_dim=16).per_sample_gradients(x[:4], y[:3])


def test_a_layer_that_mixes_samples_is_refused():
    class Tokens(nn.Module):  # applies its Linear to (n T, d): no sample axis
        def __init__(self):
            super().__init__()
            self.proj, self.head = nn.Linear(8, 8), nn.Linear(8, 5)

        def forward(self, x):
            n, T, d = x.shape
            h = self.proj(x.reshape(n * T, d)).reshape(n, T, d)
            return self.head(h.mean(1))

    torch.manual_seed(0)
    model = Tokens()
    with pytest.raises(ValueError, match="'proj' saw 12 rows for a batch of 4"):
        FactGraSS(model, proj_dim=16).per_sample_gradients(
            torch.randn(4, 3, 8), torch.tensor([0, 1, 2, 3])
        )
    assert _no_hooks(model)


def test_named_layers_only_and_unused_layers_warn():
    model = _mlp()
    x, y = _classes(4, (32,))
    comp = FactGraSS(model, proj_dim=32, layers=["4"])
    assert comp.layers == ["4"]
    assert comp.per_sample_gradients(x, y).shape == (4, 32)

    class WithAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            return self.head(self.att(x, x, x)[0].mean(1))

    torch.manual_seed(0)
    model = WithAttention()
    comp = FactGraSS(model, proj_dim=16)
    with pytest.warns(UserWarning, match="att.out_proj"):
        comp.per_sample_gradients(torch.randn(4, 3, 8), y)
    assert _no_hooks(model)


@pytest.mark.gpu
@needs_gpu
def test_cpu_and_gpu_agree(mlp_case):  # pragma: no cover - needs a GPU
    model, x, y = mlp_case
    cpu = FactGraSS(model, proj_dim=128, seed=1).per_sample_gradients(x, y)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = FactGraSS(gpu_model, proj_dim=128, seed=1).per_sample_gradients(
        x.cuda(), y.cuda()
    )
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
