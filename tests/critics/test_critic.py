import pickle

import numpy as np
import pytest
import torch

import pyro_contrast as pc
from tests.common import assert_close

SIMILARITIES = ["dot", "cosine", "neg_sq_l2", "bilinear"]


def _reference(similarity, u, v, temperature, weight=None):
    if similarity == "dot":
        sim = u @ v.T
    elif similarity == "cosine":
        sim = (u / u.norm(dim=-1, keepdim=True)) @ (v / v.norm(dim=-1, keepdim=True)).T
    elif similarity == "neg_sq_l2":
        sim = -0.5 * ((u[:, None] - v[None]) ** 2).sum(-1)
    else:
        sim = u @ weight @ v.T
    return sim / temperature


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_pairwise_matches_reference_and_aligned(similarity, dtype, chunk_size):
    # The critic's own dtype sets the precision of its temperature, as for any module.
    critic = pc.Critic.from_embeddings(similarity, temperature=0.3, dim_x=4, dim_y=4).to(dtype)
    if critic.weight is not None:
        with torch.no_grad():
            critic.weight.copy_(torch.randn(4, 4))
    u, v = torch.randn(5, 4, dtype=dtype), torch.randn(7, 4, dtype=dtype)
    pairwise = critic.pairwise(u, v, chunk_size=chunk_size)
    assert pairwise.shape == (5, 7) and pairwise.dtype == dtype
    weight = None if critic.weight is None else critic.weight.detach().to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    temperature = critic.temperature.detach()
    assert_close(temperature, 0.3, atol=1e-7, rtol=1e-7)
    assert_close(pairwise, _reference(similarity, u, v, temperature, weight), atol=tol, rtol=tol)
    aligned = critic(u[:, None, :], v[None, :, :])
    assert_close(aligned, pairwise, atol=tol, rtol=tol)


def test_encoders_bias_and_learnable_temperature():
    enc_x, enc_y = torch.nn.Linear(3, 2), torch.nn.Linear(5, 2)
    critic = pc.Critic(enc_x, enc_y, "dot", temperature=0.5, learn_temperature=True, bias=True)
    names = {n for n, _ in critic.named_parameters()}
    assert {"log_temperature", "bias", "encoder_x.weight", "encoder_y.weight"} <= names
    x, y = torch.randn(4, 3), torch.randn(4, 5)
    critic(x, y).sum().backward()
    assert critic.log_temperature.grad is not None and critic.bias.grad is not None
    fixed = pc.Critic(enc_x, enc_y, "dot", temperature=0.5)
    assert "log_temperature" not in {n for n, _ in fixed.named_parameters()}
    assert_close(fixed.temperature, 0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    critic = pc.Critic.from_embeddings("cosine", temperature=0.01)
    u, v = torch.randn(3, 8), torch.randn(4, 8)
    out = critic.pairwise(u.to(dtype), v.to(dtype))
    assert out.dtype == torch.float32
    expected = critic.pairwise(u.to(dtype).float(), v.to(dtype).float())
    assert_close(out, expected)


def test_numpy_inputs_and_extreme_temperatures():
    u, v = np.random.randn(3, 4), np.random.randn(2, 4)
    for temperature in (1e-6, 1e6):
        out = pc.Critic.from_embeddings("neg_sq_l2", temperature).pairwise(u, v)
        assert torch.isfinite(out).all()
    zero = pc.Critic.from_embeddings("cosine").pairwise(torch.zeros(1, 4), torch.randn(2, 4))
    assert_close(zero, torch.zeros(1, 2))


def test_pickle_round_trip():
    critic = pc.Critic(torch.nn.Linear(3, 3), None, "cosine", 0.2, learn_temperature=True)
    clone = pickle.loads(pickle.dumps(critic))
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    assert_close(clone(x, y), critic(x, y))


def test_bad_inputs():
    with pytest.raises(ValueError, match="similarity must be one of"):
        pc.Critic.from_embeddings("euclid")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be positive"):
            pc.Critic.from_embeddings("dot", temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        pc.Critic.from_embeddings("dot", temperature="hot")
    with pytest.raises(ValueError, match="needs dim_x and dim_y"):
        pc.Critic.from_embeddings("bilinear")
    critic = pc.Critic.from_embeddings("dot")
    with pytest.raises(ValueError, match="embedding dims differ"):
        critic.pairwise(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="x contains NaN"):
        critic(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="y contains inf"):
        critic(torch.ones(1, 2), torch.tensor([[float("inf"), 1.0]]))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        critic([[1.0]], torch.ones(1, 1))
    with pytest.raises(ValueError, match="chunk_size"):
        critic.pairwise(torch.ones(2, 2), torch.ones(2, 2), chunk_size=0)
    with pytest.raises(ValueError, match="must have shape \\(N, d\\)"):
        critic.pairwise(torch.ones(2, 2, 2), torch.ones(2, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neg_l2_matches_cdist(dtype):
    critic = pc.Critic.from_embeddings("neg_l2", temperature=0.5, bias=True)
    with torch.no_grad():
        critic.bias.fill_(0.25)
    u, v = torch.randn(5, 3, dtype=dtype), torch.randn(7, 3, dtype=dtype)
    expected = -torch.cdist(u, v) / 0.5 + 0.25
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (critic.pairwise(u, v) - expected).abs().max() < tol
    assert (critic(u[:5], v[:5]) - expected.diagonal()).abs().max() < tol


def test_neg_l2_gradient_finite_at_zero_distance():
    critic = pc.Critic.from_embeddings("neg_l2")
    u = torch.ones(2, 3, requires_grad=True)
    critic.pairwise(u, torch.ones(4, 3)).sum().backward()
    assert torch.isfinite(u.grad).all()
