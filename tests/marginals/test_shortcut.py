"""The shortcut (``method="direct"``) against its definition, and its errors."""

import pytest
import torch

import pyro_contrast as pc
from pyro_contrast.marginals.shortcut import direct_log_ratio


def _cosine(u, v, temperature):
    u = u / u.norm(dim=-1, keepdim=True)
    v = v / v.norm(dim=-1, keepdim=True)
    return u @ v.T / temperature


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 4)])
def test_cosine_shortcut_is_the_scaled_cosine(dtype, shape):
    n, k, d = shape
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g, dtype=dtype)
    c = torch.randn(k, d, generator=g, dtype=dtype)
    ab = pc.Critic.from_embeddings("cosine", temperature=0.3)
    bc = pc.Critic.from_embeddings("cosine", temperature=0.7)
    got = direct_log_ratio([[ab], [bc]], [a], c)
    torch.testing.assert_close(got, _cosine(a, c, 0.3))
    torch.testing.assert_close(direct_log_ratio([[ab], [bc]], [a], c, 2.0), _cosine(a, c, 2.0))


def test_bilinear_shortcut_composes_the_weights():
    g = torch.Generator().manual_seed(1)
    a, c = torch.randn(4, 3, generator=g), torch.randn(6, 2, generator=g)
    ab = pc.Critic.from_embeddings("bilinear", dim_x=3, dim_y=5)
    bc = pc.Critic.from_embeddings("bilinear", dim_x=5, dim_y=2)
    with torch.no_grad():
        want = a @ ab.weight @ bc.weight @ c.T / ab.temperature
        got = direct_log_ratio([[ab], [bc]], [a], c)
    torch.testing.assert_close(got, want)


def test_the_bridge_method_is_this_function():
    g = torch.Generator().manual_seed(2)
    a, b, c = (torch.randn(s, 4, generator=g) for s in (3, 50, 5))
    critics = [pc.Critic.from_embeddings("dot", temperature=0.5) for _ in "ab"]
    bridge = pc.Bridge(critics, [pc.Bank(b)], direct_temperature=0.25, progress=False)
    want = direct_log_ratio([[critics[0]], [critics[1]]], [a], c, 0.25)
    torch.testing.assert_close(bridge.log_ratio(a, c, method="direct"), want)


def test_errors_name_the_problem():
    a, c = torch.randn(2, 3), torch.randn(2, 4)
    cos, dot = (pc.Critic.from_embeddings(s) for s in ("cosine", "dot"))
    with pytest.raises(ValueError, match="share one similarity"):
        direct_log_ratio([[cos], [dot]], [a], c)
    with pytest.raises(ValueError, match="dims differ"):
        direct_log_ratio([[cos], [cos]], [a], c)
    bil = pc.Critic.from_embeddings("bilinear", dim_x=3, dim_y=3)
    with pytest.raises(ValueError, match="three-modality"):
        direct_log_ratio([[bil], [bil], [bil]], [a], a)
