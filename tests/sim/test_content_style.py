import pytest
import torch

from pyro_contrast.sim.content_style import ContentStyleModel
from tests.common import assert_close


def _invert(model, modality, x):
    """Undo a mixing layer by layer (leaky-ReLU with slope 0.2 is invertible)."""
    layers = model.mixing.mixings[modality]
    z = x.double()
    for i, weight in reversed(list(enumerate(layers))):
        if i < len(layers) - 1:
            z = torch.where(z > 0, z, z / 0.2)
        z = torch.linalg.solve(weight, z.T).T
    return z


@pytest.mark.parametrize("dims", [(5, 5, 5), (2, 0, 1), (1, 3, 0)])
@pytest.mark.parametrize("statistical", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_shapes_and_exact_invertibility(dims, statistical, causal):
    content, style, private = dims
    model = ContentStyleModel(content, style, private, 0.5, statistical, causal, seed=1)
    x1, x2, lat = model.sample(40, dtype=torch.float64)
    assert model.obs_dims == (content + style + private,) * 2
    assert x1.shape == x2.shape == (40, content + style + private)
    assert lat["style"].shape == lat["style_2"].shape == (40, style)
    z1 = torch.cat([lat["content"], lat["style"], lat["m1"]], -1)
    z2 = torch.cat([lat["content"], lat["style_2"], lat["m2"]], -1)
    assert_close(_invert(model, 0, x1), z1, atol=1e-8)
    assert_close(_invert(model, 1, x2), z2, atol=1e-8)


@pytest.mark.parametrize("prob", [0.0, 0.25, 1.0])
def test_each_style_component_changes_with_the_given_probability(prob):
    model = ContentStyleModel(2, 4, 1, style_change_prob=prob, seed=0)
    lat = model.sample_latents(20_000)
    changed = (lat["style_2"] != lat["style"]).double().mean()
    # Binomial standard error sqrt(p(1-p)/80,000) < 0.002: a five-sigma bound.
    assert abs(changed.item() - prob) < 0.01


def test_statistical_dependence_is_within_blocks_only():
    model = ContentStyleModel(3, 3, 3, 0.0, statistical_dependence=True, seed=2)
    lat = model.sample_latents(50_000)
    for name in ("content", "style", "m1", "m2"):
        cov = model.covariances[name]
        sample_cov = lat[name].T @ lat[name] / 50_000
        # Relative standard error of a sample (co)variance of 50,000 Gaussians: ~0.0063.
        assert_close(sample_cov, cov, atol=0.05 * cov.diagonal().max().item(), rtol=0)
        off_diagonal = cov - torch.diag(cov.diagonal())
        assert off_diagonal.abs().max() > 0.1  # a real within-block dependence
    # Different blocks stay independent: their cross-covariance vanishes.
    cross = lat["content"].T @ lat["m1"] / 50_000
    scale = (
        model.covariances["content"].diagonal().max() * model.covariances["m1"].diagonal().max()
    ).sqrt()
    assert cross.abs().max() < 0.03 * scale


def test_causal_dependence_is_content_to_style_only():
    model = ContentStyleModel(3, 2, 2, 0.0, causal_dependence=True, seed=3)
    lat = model.sample_latents(20_000)
    design = torch.cat([lat["content"], torch.ones(20_000, 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(design, lat["style"]).solution
    # Least squares of s on (c, 1) recovers B and a to sampling error (~0.01 here).
    assert_close(coef[:3].T, model.causal_weight, atol=0.05, rtol=0)
    assert_close(coef[3], model.causal_offset, atol=0.05, rtol=0)
    private = torch.linalg.lstsq(design, lat["m1"]).solution
    assert private[:3].abs().max() < 0.05
    independent = ContentStyleModel(3, 2, 2, causal_dependence=False, seed=3)
    assert independent.causal_weight is None


def test_seeded_and_reproducible():
    a = ContentStyleModel(seed=5).sample(10)
    b = ContentStyleModel(seed=5).sample(10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    model = ContentStyleModel(seed=5)
    assert not torch.equal(model.sample(10)[0], model.sample(10)[0])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.sample(4, generator=g1)[1], model.sample(4, generator=g2)[1])
    assert "statistical_dependence=False" in repr(model)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"content_dim": 0}, ValueError, "content_dim"),
        ({"private_dim": -1}, ValueError, "private_dims"),
        ({"style_change_prob": 1.5}, ValueError, "style_change_prob"),
        ({"statistical_dependence": 1}, TypeError, "statistical_dependence"),
        ({"causal_dependence": "yes"}, TypeError, "causal_dependence"),
        ({"mixing_layers": 0}, ValueError, "mixing_layers"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        ContentStyleModel(**kwargs)


def test_bad_sample_size_raises():
    with pytest.raises(ValueError, match="num_samples"):
        ContentStyleModel().sample(0)
    with pytest.raises(ValueError, match="num_samples"):
        ContentStyleModel().sample_latents(2.5)
