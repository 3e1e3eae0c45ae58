import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyro_contrast.critics import Critic
from pyro_contrast.training import losses
from pyro_contrast.training.fit import History, fit
from tests.common import assert_close


def _pairs(n=400, dim=4, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return x, x + noise * torch.randn(n, dim, generator=g)


def _critic(dim=4, similarity="cosine", **kwargs):
    return Critic(nn.Linear(dim, dim), nn.Linear(dim, dim), similarity, **kwargs)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_learns_and_records_history():
    x, y = _pairs()
    critic = _critic(temperature=0.5, learn_temperature=True)
    history = fit(
        critic, (x, y), steps=120, batch_size=32, lr=1e-2, validate_every=20, progress=False
    )
    assert isinstance(history, History) and len(history) == 120
    frame = history.to_pandas()
    assert list(frame.columns) == ["train_loss", "lr", "val_loss", "temperature"]
    assert frame.index.name == "step" and frame.index[0] == 1
    assert frame["val_loss"].notna().sum() == 6  # steps 20, 40, ..., 120
    assert frame["temperature"].iloc[-1] == pytest.approx(critic.temperature.item())
    assert frame["temperature"].iloc[-1] != 0.5
    # The chance level of InfoNCE with 32 candidates is log 32; training must beat it clearly.
    assert frame["val_loss"].dropna().iloc[-1] < math.log(32) - 1.0
    assert frame["val_loss"].dropna().iloc[-1] < frame["val_loss"].dropna().iloc[0]


def test_fit_is_deterministic_and_leaves_global_rng_alone():
    x, y = _pairs()
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(5)
        critic = _critic()
        state = torch.get_rng_state()
        fit(critic, (x, y), steps=30, batch_size=16, seed=seed, progress=False)
        assert torch.equal(torch.get_rng_state(), state)
        runs.append(critic)
    assert _same_weights(runs[0], runs[1])
    assert not _same_weights(runs[0], runs[2])


def test_numpy_data_equals_tensor_data_and_dataloader_trains():
    x, y = _pairs()
    a, b = _critic(), _critic()
    b.load_state_dict(a.state_dict())
    fit(a, (x, y), steps=20, batch_size=16, progress=False)
    fit(b, (x.numpy(), y.numpy()), steps=20, batch_size=16, progress=False)
    assert _same_weights(a, b)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    critic = _critic()
    history = fit(
        critic,
        loader,
        steps=60,
        lr=1e-2,
        validation=(x[:64], y[:64]),
        validate_every=30,
        progress=False,
    )
    assert len(history) == 60  # more steps than one epoch of 13 batches
    assert history.val_loss[-1] < history.val_loss[0]


def test_cosine_schedule_and_optimizers():
    x, y = _pairs()
    history = fit(
        _critic(),
        (x, y),
        steps=10,
        batch_size=16,
        lr=0.1,
        schedule="cosine",
        optimizer="sgd",
        validation=0,
        progress=False,
    )
    expected = [0.05 * (1 + math.cos(math.pi * t / 10)) for t in range(10)]
    assert_close(torch.tensor(history.lr), torch.tensor(expected), atol=1e-12)
    for name in ("adam", "adamw", "rmsprop", torch.optim.Adagrad):
        fit(_critic(), (x, y), steps=2, batch_size=16, optimizer=name, progress=False)


def test_early_stopping_restores_the_best_weights():
    # Held-out pairs are anti-aligned (y -> -y), so validation gets worse as training aligns.
    x, y = _pairs()
    held = (x[:32], -y[:32])  # one validation chunk of batch_size
    critic = _critic(similarity="dot")
    history = fit(
        critic,
        (x, y),
        steps=500,
        batch_size=32,
        lr=5e-2,
        validation=held,
        patience=3,
        validate_every=5,
        progress=False,
    )
    assert history.stopped_early and len(history) < 500
    assert history.best_val_loss == min(history.val_loss)
    assert len(history.val_loss) - history.val_loss.index(history.best_val_loss) == 4
    with torch.no_grad():
        restored = losses.infonce(critic.pairwise(*held)).item()
    assert restored == pytest.approx(history.best_val_loss, rel=1e-6)


def test_shared_mode_sums_both_losses_into_one_b_encoder():
    # Full-batch SGD: one step must equal the manual step on L_ab + L_bc (losses are invariant
    # to the batch's row order), and the tied B encoder must receive both gradients.
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(24, 3, generator=g) for _ in range(3))
    shared = nn.Linear(3, 3)
    critic_ab = Critic(nn.Linear(3, 3), shared, "dot")
    critic_bc = Critic(shared, nn.Linear(3, 3), "dot")
    twins = [Critic(nn.Linear(3, 3), nn.Linear(3, 3), "dot") for _ in range(2)]
    twins[0].load_state_dict(critic_ab.state_dict())
    twins[1].load_state_dict(critic_bc.state_dict())
    fit(
        (critic_ab, critic_bc),
        (a, b, c),
        steps=1,
        batch_size=24,
        lr=0.1,
        optimizer="sgd",
        validation=0,
        mode="shared",
        progress=False,
    )
    total = losses.infonce(twins[0].pairwise(a, b)) + losses.infonce(twins[1].pairwise(b, c))
    total.backward()
    grad_shared = twins[0].encoder_y.weight.grad + twins[1].encoder_x.weight.grad
    assert critic_ab.encoder_y is critic_bc.encoder_x
    assert_close(shared.weight, twins[0].encoder_y.weight - 0.1 * grad_shared, atol=1e-6)
    assert_close(
        critic_ab.encoder_x.weight,
        twins[0].encoder_x.weight - 0.1 * twins[0].encoder_x.weight.grad,
        atol=1e-6,
    )


def test_separate_oracle_and_pair_of_pairs_modes():
    g = torch.Generator().manual_seed(1)
    b = torch.randn(300, 3, generator=g)
    a, c = b + 0.3 * torch.randn(300, 3, generator=g), b + 0.3 * torch.randn(300, 3, generator=g)
    critics = (_critic(3), _critic(3))
    history = fit(
        critics,
        (a, b, c),
        steps=40,
        batch_size=32,
        lr=1e-2,
        mode="separate",
        validate_every=20,
        progress=False,
    )
    assert list(history.to_pandas().columns)[-2:] == ["temperature_0", "temperature_1"]
    assert history.val_loss[-1] < history.val_loss[0]
    oracle = _critic(3)
    history = fit(
        oracle,
        (a, b, c),
        steps=40,
        batch_size=32,
        lr=1e-2,
        mode="oracle",
        validate_every=20,
        progress=False,
    )
    assert history.val_loss[-1] < history.val_loss[0]
    # Two separate pair sets of different sizes for A-B and B-C.
    history = fit(
        (_critic(3), _critic(3)),
        ((a, b), (b[:200], c[:200])),
        steps=10,
        batch_size=16,
        mode="separate",
        progress=False,
    )
    assert len(history) == 10


def test_mode_checks():
    a = b = c = torch.randn(40, 3)
    shared = nn.Linear(3, 3)
    tied = (Critic(None, shared, "dot"), Critic(shared, None, "dot"))
    with pytest.raises(ValueError, match="same module object"):
        fit((_critic(3), _critic(3)), (a, b, c), mode="shared", batch_size=8, progress=False)
    with pytest.raises(ValueError, match="use mode='shared'"):
        fit(tied, (a, b, c), mode="separate", batch_size=8, progress=False)
    with pytest.raises(ValueError, match="trains 2 critic"):
        fit(_critic(3), (a, b, c), mode="shared", batch_size=8, progress=False)
    with pytest.raises(ValueError, match="mode must be"):
        fit(_critic(3), (a, b), mode="chain", batch_size=8, progress=False)
    with pytest.raises(ValueError, match="tuple of 3"):
        fit(_critic(3), (a, c), mode="oracle", batch_size=8, progress=False)


def test_bad_inputs_raise_clear_errors():
    x, y = _pairs(50)
    critic = _critic()
    bad = [
        (dict(data=(x, y[:-1])), ValueError, "mismatched lengths"),
        (dict(data=(x.clone().fill_(math.nan), y)), ValueError, "NaN"),
        (dict(data=(x, y), batch_size=60), ValueError, "batch_size=60 exceeds"),
        (dict(data=(x, y), batch_size=1), ValueError, "batch_size"),
        (dict(data=(x, y), loss="clip"), ValueError, "unknown loss"),
        (dict(data=(x, y), optimizer="lbfgs"), ValueError, "unknown optimizer"),
        (dict(data=(x, y), schedule="linear"), ValueError, "schedule"),
        (dict(data=(x, y), validation=1.0), ValueError, "validation"),
        (dict(data=(x, y), validation=0.01), ValueError, "held-out pair"),
        (dict(data=(x, y), validation=0, patience=2), ValueError, "patience needs"),
        (dict(data=(x, y), lr=-1.0), ValueError, "lr"),
        (dict(data=(x, y), steps=0), ValueError, "steps"),
        (dict(data=[x]), ValueError, "tuple of 2"),
        (dict(data=("a", "b")), TypeError, "numpy"),
    ]
    for kwargs, error, match in bad:
        kwargs = {"batch_size": 8, "progress": False, **kwargs}
        with pytest.raises(error, match=match):
            fit(critic, **kwargs)
    with pytest.raises(TypeError, match="Critic"):
        fit(nn.Linear(2, 2), (x, y), progress=False)
    with pytest.raises(ValueError, match="no trainable"):
        fit(Critic.from_embeddings("dot"), (x, y), batch_size=8, progress=False)
    with pytest.raises(FloatingPointError, match="step 1"):
        fit(critic, (x, y), loss=lambda s: s.mean() * math.nan, batch_size=8, progress=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with pytest.raises(ValueError, match="DataLoader"):
        fit(critic, loader, validation=0.1, progress=False)


@pytest.mark.slow
def test_critic_on_linear_gaussian_chain_ranks_like_the_exact_log_ratio():
    # A neg_sq_l2 critic with linear encoders can express PMI(a, b) up to a term in a
    # (-||a - M_A b||² / 2s², the mathematics page, §6). One-sided InfoNCE identifies exactly
    # that, so we compare
    # row-centred scores (each held-out a against all held-out b) by Spearman correlation.
    sim = pytest.importorskip("pyro_contrast.sim")
    chain = sim.LinearGaussianChain(seed=0)
    a, b, _ = chain.sample(4000)
    a_test, b_test, _ = chain.sample(200)
    torch.manual_seed(0)
    critic = Critic(
        nn.Linear(chain.dim_a, chain.dim_a), nn.Linear(chain.dim_b, chain.dim_a), "neg_sq_l2"
    )
    fit(critic, (a, b), "infonce", steps=300, batch_size=256, lr=1e-2, progress=False)
    with torch.no_grad():
        scores = critic.pairwise(a_test, b_test).double()
    truth = chain.log_ratio_ab(a_test, b_test)
    rho = spearmanr(
        (scores - scores.mean(1, keepdim=True)).flatten(),
        (truth - truth.mean(1, keepdim=True)).flatten(),
    )[0]
    assert rho >= 0.9
    assert np.isfinite(rho)
