"""allocate: a budget split over groups, checked property by property."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from maxvol_kit.utils import allocate


@given(
    counts=st.lists(st.integers(1, 200), min_size=1, max_size=12),
    K=st.integers(0, 400),
)
def test_allocation_is_proportional_capped_and_covers_every_group(counts, K):
    alloc = allocate(counts, K)
    total = sum(counts)
    share = [K * c / total for c in counts]
    assert alloc.sum() == min(K, total)
    assert all(0 <= a <= c for a, c in zip(alloc, counts, strict=True))
    if K >= len(counts):  # enough for one each: no group is left out
        assert all(a >= 1 for a in alloc)
    # Largest remainder: never more than the share rounded up, except the one
    # row a small group is given.
    assert all(
        a <= max(1, math.ceil(s - 1e-9)) for a, s in zip(alloc, share, strict=True)
    )


def test_a_dominant_group_gives_way_to_the_small_ones():
    """The case that once gave a small group nothing: [2, 0, 1]."""
    assert allocate([98, 1, 1], 3).tolist() == [1, 1, 1]
    np.testing.assert_array_equal(allocate([50, 30, 20], 10), [5, 3, 2])
