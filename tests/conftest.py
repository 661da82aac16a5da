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
