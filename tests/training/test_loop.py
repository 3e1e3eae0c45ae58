import math

import pytest
import torch

import pyro_contrast as pc
from pyro_contrast.training import loop
from pyro_contrast.training.bayes import svi_fit
from pyro_contrast.training.history import History
from pyro_contrast.training.loop import learning_rate, train_loop


def test_cosine_schedule_decays_from_base_to_zero():
    assert learning_rate(0.1, 0, 10, None) == 0.1
    assert learning_rate(0.1, 0, 10, "cosine") == pytest.approx(0.1)
    assert learning_rate(0.1, 5, 10, "cosine") == pytest.approx(0.05)
    assert learning_rate(0.1, 10, 10, "cosine") == pytest.approx(0.0, abs=1e-15)


def test_loop_records_history_and_stops_early():
    critic = pc.Critic.from_embeddings("dot", temperature=2.0)
    history = History(1)
    seen = []
    taken = train_loop(
        lambda lr: seen.append(lr) or 1.0 / (len(seen)),
        num_steps=10,
        history=history,
        critics=[critic],
        base_lr=0.5,
        schedule="cosine",
        after_step=lambda step: step == 4,
        progress=False,
    )
    assert taken == 4 and history.step == [1, 2, 3, 4]
    assert history.train_loss == [1.0, 0.5, 1 / 3, 0.25]
    assert history.lr == seen and seen[0] == 0.5
    assert history.temperature == [[2.0] * 4]


def test_loop_resumes_from_a_step():
    history = History(1)
    taken = train_loop(
        lambda lr: 0.0,
        num_steps=5,
        history=history,
        critics=[object()],
        base_lr=1.0,
        start=3,
        progress=False,
    )
    assert taken == 5 and history.step == [4, 5]
    assert all(math.isnan(t) for t in history.temperature[0])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_loop_refuses_a_non_finite_loss(bad):
    with pytest.raises(FloatingPointError, match="at step 1"):
        train_loop(
            lambda lr: bad,
            num_steps=3,
            history=History(0),
            critics=[],
            base_lr=1.0,
            progress=False,
        )


def test_progress_bar_defaults_to_terminals_only(capsys):
    train_loop(lambda lr: 0.0, num_steps=2, history=History(0), critics=[], base_lr=1.0)
    assert "fit" not in capsys.readouterr().err  # pytest's stderr is not a terminal


def test_fit_and_svi_fit_share_the_loop(monkeypatch):
    calls = []
    original = loop.train_loop

    def spy(*args, **kwargs):
        calls.append(kwargs.get("desc", "fit"))
        return original(*args, **kwargs)

    monkeypatch.setattr("pyro_contrast.training.fit.train_loop", spy)
    monkeypatch.setattr("pyro_contrast.training.bayes.train_loop", spy)
    x = torch.randn(32, 2)
    pc.fit(
        pc.Critic(torch.nn.Linear(2, 2), None, "dot"), (x, x), steps=2, batch_size=8, progress=False
    )
    svi_fit(pc.Critic(torch.nn.Linear(2, 2), None, "dot"), x, x, steps=2, progress=False)
    assert calls == ["fit", "svi"]
