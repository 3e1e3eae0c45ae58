import numpy as np
import pytest
import torch
from torch import nn

from pyro_contrast.critics import Critic
from pyro_contrast.sim.multimodal import MultimodalLatentModel
from pyro_contrast.studies.identifiability import identifiability_r2
from pyro_contrast.training.fit import fit
from tests.common import assert_close


def _known_relations(n=600, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    # z0 linearly, z1 through an invertible nonlinearity, z2 not at all.
    representation = np.stack([2 * z[:, 0] + 1, np.tanh(1.5 * z[:, 1]), rng.normal(size=n)], 1)
    return representation, {"linear": z[:, 0], "nonlinear": z[:, 1:2], "absent": z[:, 2]}


@pytest.mark.parametrize("backend", ["numpy", "sklearn"])
def test_r2_table_on_known_relations(backend):
    rep, latents = _known_relations()
    table = identifiability_r2(rep, latents, backend=backend)
    assert list(table.index) == ["linear", "nonlinear", "absent"]
    assert list(table.columns) == ["dim", "linear_r2", "kernel_r2"]
    assert table.loc["linear", "linear_r2"] > 0.999
    assert table.loc["nonlinear", "kernel_r2"] > 0.95
    # tanh saturates: a linear map explains less than the kernel one.
    assert table.loc["nonlinear", "linear_r2"] < table.loc["nonlinear", "kernel_r2"] - 0.03
    # Unrelated block: test R² of a few fitted coefficients on 150 rows is ~ 0 +- 0.05.
    assert abs(table.loc["absent", "linear_r2"]) < 0.05
    assert table.loc["absent", "kernel_r2"] < 0.05


def test_backends_agree_and_inputs_are_flexible():
    rep, latents = _known_relations(300)
    a = identifiability_r2(rep, latents, backend="numpy", max_kernel_samples=100)
    b = identifiability_r2(
        torch.tensor(rep, dtype=torch.float32), latents, backend="sklearn", max_kernel_samples=100
    )
    assert_close(torch.tensor(a.values), torch.tensor(b.values), atol=1e-4)
    c = identifiability_r2(rep, latents, kernel=False, seed=1)
    assert list(c.columns) == ["dim", "linear_r2"]


def test_bad_inputs():
    rep, latents = _known_relations(100)
    with pytest.raises(TypeError, match="latents"):
        identifiability_r2(rep, [latents["linear"]])
    with pytest.raises(ValueError, match="rows"):
        identifiability_r2(rep, {"a": latents["linear"][:50]})
    with pytest.raises(ValueError, match="test_fraction"):
        identifiability_r2(rep, latents, test_fraction=1.0)
    with pytest.raises(ValueError, match="backend"):
        identifiability_r2(rep, latents, backend="torch")
    with pytest.raises(ValueError, match="NaN"):
        identifiability_r2(np.full_like(rep, np.nan), latents)
    with pytest.raises(ValueError, match="too few"):
        identifiability_r2(rep[:8], {"a": latents["linear"][:8]})


@pytest.mark.slow
def test_contrastive_learning_block_identifies_the_content(capsys):
    # CPU-sized run of Daunhawer et al.'s experiment: content 3, style 2 (changing with
    # probability 0.75), private 2 + 2, 3-layer invertible leaky-ReLU mixings; 5000 training
    # pairs, MLP encoders 64-64-3 (output = content size), neg_sq_l2 critic with learnable
    # temperature, symmetric InfoNCE, 800 Adam steps of 256 pairs with a cosine schedule.
    model = MultimodalLatentModel(
        content_dim=3,
        style_dim=2,
        private_dims=(2, 2),
        style_change_prob=0.75,
        mixing_layers=3,
        seed=0,
    )
    x1, x2, _ = model.sample(5000)
    test1, _, latents = model.sample(1500)
    torch.manual_seed(0)

    def mlp(dim):
        return nn.Sequential(
            nn.Linear(dim, 64),
            nn.LeakyReLU(0.2),
            nn.Linear(64, 64),
            nn.LeakyReLU(0.2),
            nn.Linear(64, 3),
        )

    critic = Critic(
        mlp(model.obs_dims[0]), mlp(model.obs_dims[1]), "neg_sq_l2", learn_temperature=True
    )
    fit(
        critic,
        (x1, x2),
        "symmetric_infonce",
        steps=800,
        batch_size=256,
        lr=3e-3,
        schedule="cosine",
        validation=0,
        progress=False,
    )
    with torch.no_grad():
        representation = critic.encode_x(test1)
    table = identifiability_r2(representation, latents, max_kernel_samples=1000)
    with capsys.disabled():
        print("\nHeld-out R² of the view-1 representation:\n", table.round(3))
    assert (table.loc["content", ["linear_r2", "kernel_r2"]] >= 0.8).all()
    assert (table.loc[["m1", "m2"], ["linear_r2", "kernel_r2"]] <= 0.2).all().all()
    assert table.loc["style", "kernel_r2"] < table.loc["content", "kernel_r2"]
