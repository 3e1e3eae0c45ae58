import math

import pytest
import torch

from pyro_contrast.sim.multimodal import MultimodalLatentModel
from tests.common import assert_close


def _invert(model, modality, x):
    """Undo the mixing layer by layer (leaky-ReLU is invertible with slope 0.2)."""
    z = x.double()
    for i, weight in reversed(list(enumerate(model.mixings[modality]))):
        if i < len(model.mixings[modality]) - 1:
            z = torch.where(z > 0, z, z / 0.2)
        z = torch.linalg.solve(weight, z.T).T
    return z


@pytest.mark.parametrize("dims", [(2, 2, (2, 2)), (1, 0, (3, 0)), (3, 1, (0, 2))])
@pytest.mark.parametrize("dependence", [None, "statistical", "causal"])
def test_shapes_and_exact_invertibility(dims, dependence):
    content, style, private = dims
    model = MultimodalLatentModel(content, style, private, 0.5, dependence, mixing_layers=3)
    x1, x2, latents = model.sample(50, dtype=torch.float64)
    assert x1.shape == (50, model.obs_dims[0]) and x2.shape == (50, model.obs_dims[1])
    assert latents["content"].shape == (50, content)
    assert latents["style"].shape == latents["style_2"].shape == (50, style)
    assert latents["m1"].shape == (50, private[0]) and latents["m2"].shape == (50, private[1])
    z1 = torch.cat([latents["content"], latents["style"], latents["m1"]], -1)
    z2 = torch.cat([latents["content"], latents["style_2"], latents["m2"]], -1)
    assert_close(_invert(model, 0, x1), z1, atol=1e-9)
    assert_close(_invert(model, 1, x2), z2, atol=1e-9)


def test_one_layer_is_linear_and_mixings_are_nonlinear_otherwise():
    linear = MultimodalLatentModel(mixing_layers=1)
    x1, _, latents = linear.sample(10, dtype=torch.float64)
    z1 = torch.cat([latents["content"], latents["style"], latents["m1"]], -1)
    assert_close(x1, z1 @ linear.mixings[0][0].T, atol=1e-12)
    deep = MultimodalLatentModel(mixing_layers=3)
    z = torch.randn(10, 6, dtype=torch.float64)
    mixed = deep.mix(0, z[:, :2], z[:, 2:4], z[:, 4:])
    assert not torch.allclose(deep.mix(0, -z[:, :2], -z[:, 2:4], -z[:, 4:]), -mixed)


def test_seeded_and_reproducible():
    a1, b1, la = MultimodalLatentModel(seed=3).sample(20)
    a2, b2, lb = MultimodalLatentModel(seed=3).sample(20)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert all(torch.equal(la[k], lb[k]) for k in la)
    c1, _, _ = MultimodalLatentModel(seed=4).sample(20)
    assert not torch.equal(a1, c1)
    model = MultimodalLatentModel(seed=3)
    first, _, _ = model.sample(20)
    second, _, _ = model.sample(20)
    assert not torch.equal(first, second)  # one continuing sequence


@pytest.mark.parametrize("prob", [0.0, 0.3, 1.0])
def test_style_changes_with_the_given_probability(prob):
    n, style_dim = 20000, 2
    model = MultimodalLatentModel(style_dim=style_dim, style_change_prob=prob)
    _, _, latents = model.sample(n, dtype=torch.float64)
    changed = (latents["style"] != latents["style_2"]).double().mean().item()
    # Binomial proportion of n * style_dim components: 4 standard errors.
    bound = 4 * math.sqrt(prob * (1 - prob) / (n * style_dim)) + 1e-12
    assert abs(changed - prob) <= bound
    delta = (latents["style_2"] - latents["style"])[latents["style"] != latents["style_2"]]
    if prob > 0:  # perturbations are N(0, 1): their variance within 5 standard errors
        assert abs(delta.var().item() - 1) < 5 * math.sqrt(2 / delta.numel())


def test_latent_dependence_structures():
    n = 20000
    se = 4 / math.sqrt(n)  # 4 standard errors of a correlation near 0
    _, _, lat = MultimodalLatentModel(dependence=None).sample(n, dtype=torch.float64)
    joint = torch.cat([lat["content"], lat["style"], lat["m1"], lat["m2"]], -1)
    corr = torch.corrcoef(joint.T)
    assert (corr - torch.eye(8, dtype=torch.float64)).abs().max() < se
    model = MultimodalLatentModel(dependence="statistical")
    _, _, lat = model.sample(n, dtype=torch.float64)
    joint = torch.cat([lat["content"], lat["style"], lat["m1"], lat["m2"]], -1)
    assert (torch.corrcoef(joint.T) - model.correlation).abs().max() < se
    assert (model.correlation - torch.eye(8, dtype=torch.float64)).abs().max() > 0.1
    model = MultimodalLatentModel(dependence="causal")
    _, _, lat = model.sample(n, dtype=torch.float64)
    coef = torch.linalg.lstsq(lat["content"], lat["m1"]).solution.T
    assert (coef - model.causal_weights["m1"]).abs().max() < 0.05  # slope se ~ 1/sqrt(n)


def test_invalid_arguments():
    bad = [
        (dict(content_dim=0), "content_dim"),
        (dict(style_dim=-1), "style_dim"),
        (dict(private_dims=(1,)), "private_dims"),
        (dict(private_dims=(1, -2)), r"private_dims\[1\]"),
        (dict(style_change_prob=1.5), "style_change_prob"),
        (dict(dependence="confounded"), "dependence"),
        (dict(mixing_layers=0), "mixing_layers"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            MultimodalLatentModel(**kwargs)
    with pytest.raises(ValueError, match="num_samples"):
        MultimodalLatentModel().sample(0)
