"""Shared test configuration: hypothesis profiles and the dtype fixture."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# `ci`: derandomized, so a failure reproduces on every machine; `dev`: random
# examples, for exploring (HYPOTHESIS_PROFILE=dev make test).
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    """Each supported floating dtype."""
    return np.dtype(request.param)


def rtol_for(dtype):
    """A relative tolerance that roundoff of a small problem stays inside."""
    return 1e-9 if np.dtype(dtype) == np.float64 else 2e-3


def _gpu_available():
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    try:
        import cupy

        return bool(cupy.is_available())
    except ImportError:
        return False


GPU = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not _gpu_available(), reason="no CUDA device")


def _converter(name):
    """A function moving a NumPy array to the backend ``name``."""
    if name == "numpy":
        return np.asarray
    if name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict")
        return xp.asarray
    if name in ("torch", "torch-cuda"):
        torch = pytest.importorskip("torch")
        device = "cuda" if name == "torch-cuda" else "cpu"
        return lambda A: torch.asarray(A, device=device)
    cupy = pytest.importorskip("cupy")
    return cupy.asarray


@pytest.fixture(
    scope="session",
    params=[
        "numpy",
        "torch",
        "array_api_strict",
        pytest.param("cupy", marks=[GPU, needs_gpu]),
        pytest.param("torch-cuda", marks=[GPU, needs_gpu]),
    ],
)
def backend(request):
    """``(name, to_backend)`` for each array backend present on this machine."""
    return request.param, _converter(request.param)


def to_numpy(x):
    """A NumPy copy of an array from any backend."""
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
