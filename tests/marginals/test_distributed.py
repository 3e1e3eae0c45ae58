import sys

import numpy as np
import pytest
import torch

from pyro_contrast.marginals.distributed import logsumexp_reduce_blocks
from pyro_contrast.ops import logmatmul
from tests.common import assert_close

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

TEMPERATURE = 0.1


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        processes=True,
        n_workers=2,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # None would still bind the default port 8787
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def _partials(queries, candidates, left, right):
    """Numerator (N, K) and denominator (N,) log-partials of one bank block."""
    scores_left = queries @ left.T / TEMPERATURE
    return (
        logmatmul(scores_left, right @ candidates.T / TEMPERATURE),
        torch.logsumexp(scores_left, -1),
    )


def _problem(num_items=5000, dim=8):
    rng = np.random.default_rng(0)
    left = rng.standard_normal((num_items, dim)).astype(np.float32)
    right = rng.standard_normal((num_items, dim)).astype(np.float32)
    queries = torch.randn(6, dim)
    candidates = torch.randn(5, dim)
    return queries, candidates, left, right


def test_matches_single_machine(client):
    queries, candidates, left, right = _problem()
    arrays = [da.from_array(left, chunks=(1300, 8)), da.from_array(right, chunks=(1300, 4))]

    def fn(z_left, z_right):  # a closure: shipped by value to the workers
        return _partials(queries, candidates, z_left, z_right)

    # 1300-row blocks in 500-row pieces, combined in pairs: every level of the tree is used.
    numerator, denominator = logsumexp_reduce_blocks(
        arrays, fn, client=client, split_every=2, chunk_size=500
    )
    expected = _partials(queries, candidates, torch.from_numpy(left), torch.from_numpy(right))
    assert numerator.shape == (6, 5) and denominator.shape == (6,)
    assert_close(numerator, expected[0], atol=1e-5, rtol=1e-5)
    assert_close(denominator, expected[1], atol=1e-5, rtol=1e-5)


def test_uses_the_active_client_and_single_block(client):
    values = np.linspace(-300.0, 300.0, 100).reshape(100, 1)
    arrays = [da.from_array(values, chunks=(100, 1))]
    with client.as_current():
        (total,) = logsumexp_reduce_blocks(
            arrays, lambda z: (torch.logsumexp(z[:, 0], 0),), progress=True
        )
    assert_close(total, torch.logsumexp(torch.from_numpy(values[:, 0]), 0), atol=1e-12)


def test_no_client():
    arrays = [da.zeros((10, 2), chunks=5)]
    with pytest.raises(ValueError, match="no active dask.distributed client"):
        logsumexp_reduce_blocks(arrays, lambda z: (z.sum(),))


@pytest.mark.parametrize(
    "arrays,error,match",
    [
        (np.zeros((4, 2)), TypeError, "non-empty sequence"),
        ([], TypeError, "non-empty sequence"),
        ([np.zeros((4, 2))], TypeError, r"arrays\[0\] must be a dask array"),
        ([da.zeros((4, 2), chunks=2), da.zeros((4, 2), chunks=(1, 2))], ValueError, "row chunks"),
        ([da.zeros((0, 2), chunks=2)], ValueError, "must have rows"),
    ],
)
def test_bad_arrays(client, arrays, error, match):
    with pytest.raises(error, match=match):
        logsumexp_reduce_blocks(arrays, lambda z: (z.sum(),), client=client)


def test_bad_arguments(client):
    arrays = [da.zeros((4, 2), chunks=2)]
    with pytest.raises(TypeError, match="fn must be callable"):
        logsumexp_reduce_blocks(arrays, None, client=client)
    with pytest.raises(TypeError, match="client must be"):
        logsumexp_reduce_blocks(arrays, lambda z: (z.sum(),), client="tcp://nowhere")
    with pytest.raises(ValueError, match="split_every"):
        logsumexp_reduce_blocks(arrays, lambda z: (z.sum(),), client=client, split_every=1)
    with pytest.raises(ValueError, match="chunk_size"):
        logsumexp_reduce_blocks(arrays, lambda z: (z.sum(),), client=client, chunk_size=0)
    with pytest.raises(TypeError, match="tuple of tensors"):
        logsumexp_reduce_blocks(arrays, lambda z: z.sum(), client=client)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dask\]"'):
        logsumexp_reduce_blocks([], lambda: ())
