"""Tournament MaxVol on a local Dask cluster: certified on all rows, exact cases."""

import subprocess
import sys

import numpy as np
import pytest

from maxvol_kit import ConvergenceWarning, fast_maxvol, tournament_maxvol

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """Two single-threaded workers in this process (fast to start)."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def scaled(n, r, seed, spread=1.0):
    """Gaussian rows of different scales: the choice must follow the norms."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, r)) * np.exp(rng.uniform(-spread, spread, (n, 1)))


def max_abs_c(A, idx):
    """The oracle: max|C| over all rows, C = A A[idx]^-1, in float64."""
    A = np.asarray(A, dtype=np.float64)
    return float(np.abs(A @ np.linalg.inv(A[idx])).max())


def on_cluster(client, A, rows):
    """A Dask array of ``A`` by blocks of ``rows``, held by the workers."""
    return client.persist(da.from_array(A, chunks=(rows, A.shape[1])))


@pytest.mark.parametrize("method", ["rect", "fast"])
def test_dominant_on_every_row_of_the_whole_matrix(client, method):
    A = scaled(16000, 10, 1)
    res = tournament_maxvol(on_cluster(client, A, 2000), method=method, client=client)
    idx = np.asarray(res.indices)
    assert idx.dtype == np.int64 and idx.shape == (10,)
    assert np.unique(idx).size == 10
    assert res.converged
    assert max_abs_c(A, idx) <= 1.05 * (1 + 1e-9)
    assert res.log_volume == pytest.approx(np.linalg.slogdet(A[idx])[1], rel=1e-10)


def test_converged_tells_the_truth_when_stopped_early(client):
    A = on_cluster(client, scaled(16000, 10, 0), 200)
    with pytest.warns(ConvergenceWarning, match="max_iter=0"):
        early = tournament_maxvol(A, method="fast", max_iter=0, client=client)
    # Without swap rounds the merge of 80 blocks is not dominant here.
    assert not early.converged
    assert max_abs_c(A.compute(), early.indices) > 1.05
    full = tournament_maxvol(A, method="fast", client=client)
    assert full.converged and max_abs_c(A.compute(), full.indices) <= 1.05 + 1e-9
    assert full.n_iter > early.n_iter
    assert full.log_volume > early.log_volume


@pytest.mark.parametrize("method", ["rect", "fast"])
def test_one_block_gives_the_rows_of_fast_maxvol(client, method):
    # One block: the candidates contain the greedy rows of the whole matrix,
    # so the merge repeats fast_maxvol's greedy; when that is already
    # dominant (no swaps), the answers agree row for row and in order.
    A = scaled(3000, 8, 2)
    ref = fast_maxvol(A)
    res = tournament_maxvol(on_cluster(client, A, 3000), method=method, client=client)
    assert set(res.indices.tolist()) == set(ref.indices.tolist())
    assert res.log_volume == pytest.approx(ref.log_volume, rel=1e-12)
    if ref.n_iter == 0:
        np.testing.assert_array_equal(res.indices, ref.indices)


def test_every_row_a_candidate_reproduces_fast_maxvol_with_its_swaps(client):
    # n_candidates >= block rows: the pool is all of A, sorted by index, so
    # the merge *is* fast_maxvol(A), swaps included.
    A = scaled(300, 6, 3)
    ref = fast_maxvol(A, tol=1.0)
    assert ref.n_iter > 0  # the case is not trivial
    res = tournament_maxvol(
        on_cluster(client, A, 100), tol=1.0, n_candidates=100, client=client
    )
    np.testing.assert_array_equal(res.indices, ref.indices)
    assert res.n_iter == ref.n_iter and res.converged
    assert res.log_volume == pytest.approx(ref.log_volume, rel=1e-12)


def test_one_column_picks_the_largest_entry_across_blocks(client):
    A = scaled(5000, 1, 4, spread=3.0)
    res = tournament_maxvol(on_cluster(client, A, 600), method="fast", client=client)
    assert res.indices.tolist() == [int(np.argmax(np.abs(A[:, 0])))]


def test_a_tree_of_merges_is_still_certified(client):
    A = scaled(12000, 6, 5)
    res = tournament_maxvol(
        on_cluster(client, A, 300), split_every=3, method="fast", client=client
    )
    assert res.converged and max_abs_c(A, res.indices) <= 1.05 * (1 + 1e-9)


def test_numpy_here_and_dask_on_the_cluster_agree(client):
    A = scaled(8000, 7, 6)
    here = tournament_maxvol(A, chunks=1000)
    there = tournament_maxvol(on_cluster(client, A, 1000), client=client)
    np.testing.assert_array_equal(here.indices, there.indices)
    assert here.n_iter == there.n_iter and here.converged == there.converged


def test_coefficients_lazy_for_dask_and_on_access_for_numpy(client):
    A = scaled(4000, 5, 7)
    oracle = A @ np.linalg.inv(A[tournament_maxvol(A, chunks=500).indices])
    res = tournament_maxvol(on_cluster(client, A, 500), client=client)
    assert isinstance(res.coefficients, da.Array)
    C = res.coefficients.compute()
    np.testing.assert_allclose(C, oracle, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(C[res.indices], np.eye(5))
    local = tournament_maxvol(A, chunks=500)
    np.testing.assert_allclose(local.coefficients, oracle, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_memory_mapped_npy_file(client, tmp_path, dtype):
    A = scaled(20000, 8, 8).astype(dtype)
    path = tmp_path / "A.npy"
    np.save(path, A)
    mapped = np.load(path, mmap_mode="r")
    from_path = tournament_maxvol(path, chunks=2500, client=client)
    from_map = tournament_maxvol(mapped, chunks=2500)
    in_memory = tournament_maxvol(A, chunks=2500)
    # The same blocks give the same answer whichever way they are read.
    np.testing.assert_array_equal(from_path.indices, in_memory.indices)
    np.testing.assert_array_equal(from_map.indices, in_memory.indices)
    slack = 1e-9 if dtype == np.float64 else 1e-5
    assert from_path.converged
    assert max_abs_c(A, from_path.indices) <= 1.05 * (1 + slack)
    # A Dask array over the memory map works on a cluster of threads.
    dask_map = tournament_maxvol(da.from_array(mapped, chunks=(2500, 8)), client=client)
    np.testing.assert_array_equal(dask_map.indices, in_memory.indices)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sending large graph")
def test_200000_by_32_in_8_blocks_within_1_percent_of_fast_maxvol(client):
    A = np.random.default_rng(0).standard_normal((200000, 32))
    ref = fast_maxvol(A)
    res = tournament_maxvol(on_cluster(client, A, 25000), client=client)
    assert res.converged
    assert max_abs_c(A, res.indices) <= 1.05 * (1 + 1e-9)
    assert np.unique(res.indices).size == 32
    assert res.log_volume >= 0.99 * ref.log_volume


def test_blocks_with_few_rows_or_low_rank_still_give_a_full_answer(client):
    A = scaled(2000, 6, 9)
    A[:500, 3:] = 0.0  # the first blocks have rank 3
    res = tournament_maxvol(on_cluster(client, A, 250).rechunk({0: (3, 497, 1500)}))
    assert res.converged and max_abs_c(A, res.indices) <= 1.05 * (1 + 1e-9)


def test_imports_and_runs_without_dask():
    code = (
        "import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
        "import numpy as np, maxvol_kit\n"
        "A = np.random.default_rng(0).standard_normal((3000, 5))\n"
        "res = maxvol_kit.tournament_maxvol(A, chunks=700)\n"
        "C = A @ np.linalg.inv(A[res.indices])\n"
        "assert res.converged and np.abs(C).max() <= 1.05 + 1e-9\n"
        "print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"method": "lu"}, ValueError, ["method ('lu')", "'rect'"]),
        ({"method": "fast", "n_candidates": 12}, ValueError, ["n_candidates (12)"]),
        ({"n_candidates": 3}, ValueError, ["n_candidates (3)", "at least r = 4"]),
        ({"tol": 0.9}, ValueError, ["tol (0.9)", "tol=1.05"]),
        ({"max_iter": -1}, ValueError, ["max_iter (-1)"]),
        ({"split_every": 1}, ValueError, ["split_every (1)", "split_every=None"]),
        ({"chunks": 0}, ValueError, ["chunks (0)", "rows per block"]),
        ({"n_offenders": 0}, ValueError, ["n_offenders (0)"]),
        ({"client": "localhost"}, TypeError, ["client", "Client"]),
        ({"max_iter": 1.5}, TypeError, ["max_iter", "integer"]),
    ],
)
def test_bad_parameters_name_the_parameter_and_the_fix(kwargs, error, words):
    A = scaled(100, 4, 0)
    with pytest.raises(error) as info:
        tournament_maxvol(A, **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("A", "error", "words"),
    [
        (np.ones(10), ValueError, ["2-D", "1-D"]),
        (np.ones((3, 5)), ValueError, ["fewer rows than columns", "A.T"]),
        (np.ones((0, 3)), ValueError, ["empty"]),
        (np.ones((10, 3), dtype=int), TypeError, ["int64", "astype(float64)"]),
        (np.ones((10, 3, 2)), ValueError, ["2-D", "3-D"]),
        ([["a", "b"]], TypeError, ["dtype"]),
    ],
)
def test_bad_matrices_get_clear_errors(A, error, words):
    with pytest.raises(error) as info:
        tournament_maxvol(A)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("as_dask", [False, True])
def test_non_finite_and_rank_deficient_input(client, as_dask):
    def wrap(A):
        return on_cluster(client, A, 100) if as_dask else A

    A = scaled(1000, 4, 1)
    A[750, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        tournament_maxvol(wrap(A), chunks=100, client=client if as_dask else None)
    B = scaled(1000, 4, 1)
    B[:, 3] = B[:, 0] - 2 * B[:, 1]
    with pytest.raises(ValueError, match=r"numerical rank 3 < 4"):
        tournament_maxvol(wrap(B), chunks=100, client=client if as_dask else None)


def test_dask_input_with_unknown_row_chunks_or_wrong_dtype(client):
    A = da.from_array(scaled(400, 3, 0), chunks=(100, 3))
    unknown = A[A[:, 0] > -10]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        tournament_maxvol(unknown)
    with pytest.raises(TypeError, match="int64"):
        tournament_maxvol(A.astype(np.int64))
    with pytest.raises(ValueError, match="fewer rows than columns"):
        tournament_maxvol(A.T)
