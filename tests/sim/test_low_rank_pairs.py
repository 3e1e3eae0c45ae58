import pytest
import torch

from pyro_contrast.sim.low_rank_pairs import LowRankPairs
from tests.common import assert_close


@pytest.mark.parametrize("dims", [(6, 5, 2, 0), (40, 39, 10, 0), (8, 4, 3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_orthonormal_loadings(dims, dtype):
    dim_x, dim_y, rank, spikes = dims
    model = LowRankPairs(dim_x, dim_y, rank, num_spikes=spikes, seed=1)
    x, y = model.sample(7, dtype=dtype)
    assert x.shape == (7, dim_x) and y.shape == (7, dim_y) and x.dtype == y.dtype == dtype
    eye = torch.eye(rank, dtype=torch.float64)
    assert_close(model.loading_x.T @ model.loading_x, eye, atol=1e-12)
    assert_close(model.loading_y.T @ model.loading_y, eye, atol=1e-12)
    assert model.spikes.shape == (dim_x, spikes)


def test_population_moments_match_samples():
    # Entries of a sample covariance of 40,000 draws have standard errors below 0.01 here
    # (variances at most 3**2 + 1), so 0.06 is a six-sigma bound.
    model = LowRankPairs(8, 6, 3, noise_scale=0.5, num_spikes=2, spike_scale=3.0, seed=2)
    x, y = model.sample(40_000, dtype=torch.float64)
    n = x.shape[0]
    assert_close(x.T @ x / n, model.cov_x, atol=0.06 * 9, rtol=0)
    assert_close(y.T @ y / n, model.cov_y, atol=0.06, rtol=0)
    assert_close(x.T @ y / n, model.cross_covariance, atol=0.06, rtol=0)


def test_cross_covariance_singular_subspaces_are_the_loadings():
    model = LowRankPairs(12, 9, 4, num_spikes=3, seed=0)
    u, s, vh = torch.linalg.svd(model.cross_covariance)
    assert_close(s[:4], torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert s[4:].abs().max() < 1e-12
    assert_close(u[:, :4] @ u[:, :4].T, model.loading_x @ model.loading_x.T, atol=1e-12)
    assert_close(vh[:4].T @ vh[:4], model.loading_y @ model.loading_y.T, atol=1e-12)


def test_spikes_dominate_the_principal_components_of_x():
    model = LowRankPairs(20, 15, 3, noise_scale=0.5, num_spikes=3, spike_scale=3.0, seed=0)
    top = torch.linalg.eigh(model.cov_x)[1][:, -3:]
    # The top principal subspace of x is (mostly) the spikes, not the signal.
    overlap_spikes = torch.linalg.svdvals(top.T @ model.spikes).min()
    overlap_signal = torch.linalg.svdvals(top.T @ model.loading_x).min()
    assert overlap_spikes > 0.9 > 0.5 > overlap_signal


def test_unpaired_sample_hides_partners_within_batches():
    model = LowRankPairs(6, 5, 2, seed=3)
    reference = LowRankPairs(6, 5, 2, seed=3)
    x, y, partner = model.sample_unpaired(20, 5, dtype=torch.float64)
    x_ref, y_ref = reference.sample(20, dtype=torch.float64)
    assert torch.equal(x, x_ref)
    assert torch.equal(y[partner], y_ref)
    # Each partner stays inside its own mini-batch, and the order really is shuffled.
    assert torch.equal(partner // 5, torch.arange(20) // 5)
    assert not torch.equal(partner, torch.arange(20))


def test_seeded_and_reproducible():
    a = LowRankPairs(6, 5, 2, seed=4).sample(10)
    b = LowRankPairs(6, 5, 2, seed=4).sample(10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    model = LowRankPairs(6, 5, 2, seed=4)
    assert not torch.equal(model.sample(10)[0], model.sample(10)[0])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(model.sample(3, generator=g1)[1], model.sample(3, generator=g2)[1])
    assert "LowRankPairs(dim_x=6" in repr(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 0}, "rank"),
        ({"dim_x": 3, "rank": 4}, "dim_x"),
        ({"dim_y": 2.5}, "dim_y"),
        ({"noise_scale": 0.0}, "noise_scale"),
        ({"num_spikes": 40}, "num_spikes"),
        ({"spike_scale": -1.0}, "spike_scale"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LowRankPairs(**{"dim_x": 10, "dim_y": 9, "rank": 3, **kwargs})


def test_bad_sample_arguments_raise():
    model = LowRankPairs(6, 5, 2)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        model.sample_unpaired(7, 5)
    with pytest.raises(ValueError, match="batch_size"):
        model.sample_unpaired(10, 0)
