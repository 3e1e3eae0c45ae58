import json
import os
import pickle
import tracemalloc

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from pyro_contrast.critics import Critic
from pyro_contrast.training import losses
from pyro_contrast.training.checkpoint import load_critic, save_critic
from pyro_contrast.training.fit import fit


def _mlp(d_in, d_out):
    return nn.Sequential(
        nn.Linear(d_in, 8),
        nn.LeakyReLU(0.1),
        nn.LayerNorm(8),
        nn.Dropout(0.1),
        nn.GELU(approximate="tanh"),
        nn.Linear(8, d_out, bias=False),
        nn.Tanh(),
    )


CRITICS = {
    "identity_cosine": lambda: Critic.from_embeddings("cosine", temperature=0.07),
    "linear_dot_bias": lambda: Critic(nn.Linear(3, 2), nn.Linear(4, 2), "dot", 0.5, True, True),
    "mlp_l2": lambda: Critic(_mlp(3, 2), _mlp(4, 2), "neg_sq_l2", learn_temperature=True),
    "bilinear_f64": lambda: Critic(
        nn.Linear(3, 5), None, "bilinear", 2.0, dim_x=5, dim_y=4
    ).double(),
    "tied": lambda: (lambda enc: Critic(enc, enc, "dot"))(nn.Linear(3, 2)),
}


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([2.0, 3.0, 4.0]))

    def forward(self, x):
        return x * self.scale


def _perturbed(critic):
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(torch.randn_like(p))
    return critic.eval()


@pytest.mark.parametrize("name", sorted(CRITICS))
def test_save_load_round_trip(tmp_path, name):
    critic = _perturbed(CRITICS[name]())
    path = tmp_path / "critic.pt"
    save_critic(critic, path)
    loaded = load_critic(path).eval()
    dim_x = 3 if name != "identity_cosine" else 4
    dim_y = 3 if name in ("tied",) else 4
    dtype = critic.log_temperature.dtype
    x, y = torch.randn(5, dim_x, dtype=dtype), torch.randn(6, dim_y, dtype=dtype)
    assert torch.equal(loaded.pairwise(x, y), critic.pairwise(x, y))
    assert repr(loaded) == repr(critic)
    assert loaded.similarity == critic.similarity
    assert isinstance(loaded.log_temperature, nn.Parameter) == isinstance(
        critic.log_temperature, nn.Parameter
    )
    assert (loaded.bias is None) == (critic.bias is None)
    assert loaded.log_temperature.dtype == critic.log_temperature.dtype
    assert (loaded.encoder_x is loaded.encoder_y) == (name == "tied")
    assert os.listdir(tmp_path) == ["critic.pt"]  # the temporary file was renamed away


def test_custom_encoders_need_user_modules(tmp_path):
    critic = _perturbed(Critic(_Custom(), nn.Linear(3, 3), "dot"))
    path = tmp_path / "custom.pt"
    save_critic(critic, path)
    with pytest.raises(ValueError, match="custom module.*encoder_x="):
        load_critic(path)
    loaded = load_critic(path, encoder_x=_Custom())
    x = torch.randn(4, 3)
    assert torch.equal(loaded.pairwise(x, x), critic.pairwise(x, x))
    with pytest.raises(ValueError, match="weights do not match"):
        load_critic(path, encoder_x=nn.Linear(3, 3, bias=False))


def test_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "critic.pt"
    path.write_text("user data")
    with pytest.raises(ValueError, match="overwrite=True"):
        save_critic(Critic.from_embeddings(), path)
    assert path.read_text() == "user data"
    save_critic(Critic.from_embeddings("dot", temperature=3.0), path, overwrite=True)
    assert load_critic(path).temperature.item() == pytest.approx(3.0)
    with pytest.raises(TypeError, match="Critic"):
        save_critic(nn.Linear(2, 2), tmp_path / "x.pt")


def test_load_refuses_anything_but_our_weights(tmp_path):
    good = tmp_path / "good.pt"
    save_critic(Critic(nn.Linear(3, 2), nn.Linear(3, 2), "dot"), good)
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(good.read_bytes()[:200] + os.urandom(300))
    with pytest.raises(ValueError, match="not a weights-only torch file"):
        load_critic(corrupted)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump(_Custom, f)  # a class reference: weights_only loading must refuse it
    with pytest.raises(ValueError, match="not a weights-only torch file"):
        load_critic(evil)
    torch_pickle = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), torch_pickle)
    with pytest.raises(ValueError, match="not a weights-only torch file"):
        load_critic(torch_pickle)
    payload = torch.load(good, weights_only=True)
    del payload["state_dict"]["encoder_x.bias"]
    missing = tmp_path / "missing.pt"
    torch.save(payload, missing)
    with pytest.raises(ValueError, match="encoder_x declares 8 parameters but the file holds 6"):
        load_critic(missing)
    payload = torch.load(good, weights_only=True)
    spec = json.loads(payload["spec"])
    spec["encoder_x"] = {"type": "transformer"}
    payload["spec"] = json.dumps(spec)
    torch.save(payload, tmp_path / "spec.pt")
    with pytest.raises(ValueError, match="unknown encoder type"):
        load_critic(tmp_path / "spec.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pyro-contrast critic"):
        load_critic(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_critic(tmp_path / "absent.pt")


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g)
    return x, x + 0.5 * torch.randn(300, 4, generator=g)


def _net():
    return Critic(
        nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.ReLU(), nn.Linear(8, 4)),
        nn.Linear(4, 4),
        "cosine",
        temperature=0.3,
        learn_temperature=True,
    )


class _Interrupt(Exception):
    pass


def _loss_interrupted_at(call):
    count = [0]

    def objective(critic, x, y):
        count[0] += 1
        if count[0] == call:
            raise _Interrupt
        return losses.symmetric_infonce(critic.pairwise(x, y))

    return losses.BatchLoss(objective, name="clip")


SETTINGS = dict(
    batch_size=32,
    lr=1e-2,
    schedule="cosine",
    validation=0.2,
    patience=50,
    validate_every=5,
    checkpoint_every=5,
    progress=False,
)


def test_resume_is_bit_for_bit_equal_to_an_uninterrupted_run(tmp_path):
    # Dropout in the encoder makes the global RNG matter, the cosine schedule the step count,
    # Adam its moment estimates, and patience the best-weights snapshot.
    x, y = _data()
    torch.manual_seed(1)
    reference = _net()
    ref_history = fit(
        reference,
        (x, y),
        _loss_interrupted_at(-1),
        steps=23,
        checkpoint_dir=tmp_path / "ref",
        **SETTINGS,
    )
    torch.manual_seed(1)
    with pytest.raises(_Interrupt):  # dies during step 13; the last checkpoint is step 10
        fit(
            _net(),
            (x, y),
            _loss_interrupted_at(13),
            steps=23,
            checkpoint_dir=tmp_path / "run",
            **SETTINGS,
        )
    torch.manual_seed(99)  # a different init and RNG: everything must come from the checkpoint
    resumed = _net()
    history = fit(
        resumed,
        (x, y),
        _loss_interrupted_at(-1),
        steps=23,
        checkpoint_dir=tmp_path / "run",
        resume=True,
        **SETTINGS,
    )
    ref_state, state = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    assert history.state_dict() == ref_history.state_dict()
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint.pt", "config.json"]


def test_resume_can_extend_steps_without_a_schedule(tmp_path):
    x, y = _data()
    settings = dict(SETTINGS, schedule=None, patience=None)
    torch.manual_seed(1)
    reference = _net()
    fit(reference, (x, y), steps=20, **settings)
    torch.manual_seed(1)
    partial = _net()
    fit(partial, (x, y), steps=10, checkpoint_dir=tmp_path, **settings)
    fit(partial, (x, y), steps=20, checkpoint_dir=tmp_path, resume=True, **settings)
    assert all(
        torch.equal(a, b)
        for a, b in zip(reference.state_dict().values(), partial.state_dict().values(), strict=True)
    )


def test_checkpoint_dir_safety(tmp_path):
    x, y = _data()
    fit(_net(), (x, y), steps=5, checkpoint_dir=tmp_path, **SETTINGS)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        fit(_net(), (x, y), steps=5, checkpoint_dir=tmp_path, **SETTINGS)
    with pytest.raises(ValueError, match="lr: saved 0.01, now 0.1"):
        fit(_net(), (x, y), steps=5, checkpoint_dir=tmp_path, resume=True, **dict(SETTINGS, lr=0.1))
    with pytest.raises(ValueError, match="steps"):  # a cosine schedule pins the step count
        fit(_net(), (x, y), steps=9, checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a weights-only torch file"):
        fit(_net(), (x, y), steps=5, checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    fresh = tmp_path / "fresh"
    fit(_net(), (x, y), steps=5, checkpoint_dir=fresh, resume=True, **SETTINGS)  # starts anew
    assert (fresh / "checkpoint.pt").exists()


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        load_critic(path)


def _respecced(tmp_path, good, change, name="bomb.pt"):
    payload = torch.load(good, weights_only=True)
    spec = json.loads(payload["spec"])
    change(spec)
    payload["spec"] = json.dumps(spec)
    path = tmp_path / name
    torch.save(payload, path)
    return path


def test_spec_declaring_huge_layers_refused_before_allocating(tmp_path):
    """A 3 KB file declaring Linear(40000, 40000) allocated 6.4 GB before being refused."""
    good = tmp_path / "good.pt"
    save_critic(Critic(nn.Linear(3, 2), nn.Linear(3, 2), "dot"), good)

    def huge(spec):
        spec["encoder_x"].update(in_features=40_000, out_features=40_000)

    path = _respecced(tmp_path, good, huge)
    assert path.stat().st_size < 4_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="encoder_x declares 1600040000 parameters"):
            load_critic(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s["encoder_x"].update(in_features=-3), "in_features must be a positive int"),
        (lambda s: s["encoder_x"].update(out_features=2.5), "out_features must be a positive"),
        (lambda s: s["encoder_x"].update(in_features=True), "in_features must be a positive"),
        (lambda s: s.update(dtype="int64"), "dtype 'int64'"),
        (lambda s: s.update(dtype="Tensor"), "dtype 'Tensor'"),
        (lambda s: s.update(version="1"), "version '1'"),
        (lambda s: s.update(encoder_x={"type": "sequential", "layers": "ab"}), "must be a list"),
        (lambda s: s.update(similarity="bilinear", dim_x=50_000, dim_y=50_000), "bilinear"),
    ],
)
def test_spec_with_wrong_values(tmp_path, change, match):
    good = tmp_path / "good.pt"
    save_critic(Critic(nn.Linear(3, 2), nn.Linear(3, 2), "dot"), good)
    with pytest.raises(ValueError, match=match):
        load_critic(_respecced(tmp_path, good, change))


def test_declared_limit(tmp_path, monkeypatch):
    from pyro_contrast.training import checkpoint

    good = tmp_path / "good.pt"
    save_critic(Critic(nn.Linear(3, 2), nn.Linear(3, 2), "dot"), good)
    monkeypatch.setattr(checkpoint, "MAX_PARAMETERS", 7)
    with pytest.raises(ValueError, match="over the limit of 7"):
        load_critic(good)


_JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["linear", "sequential", "identity", "relu", "float16", "bilinear"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_SPEC_PATHS = [
    ("similarity",),
    ("temperature",),
    ("dtype",),
    ("dim_x",),
    ("version",),
    ("encoder_x",),
    ("encoder_x", "in_features"),
    ("encoder_x", "out_features"),
    ("encoder_x", "bias"),
    ("encoder_y", "type"),
    ("tied",),
]


@given(
    changes=st.lists(st.tuples(st.sampled_from(_SPEC_PATHS), _JSON_VALUES), max_size=3),
    keep=st.one_of(st.just(1.0), st.floats(0, 1)),
)
def test_fuzzed_critic_files_load_or_raise(tmp_path_factory, changes, keep):
    folder = tmp_path_factory.mktemp("fuzz")
    good = folder / "good.pt"
    save_critic(Critic(nn.Linear(3, 2), nn.Linear(3, 2), "dot", 0.5, bias=True), good)
    payload = torch.load(good, weights_only=True)
    spec = json.loads(payload["spec"])
    for path, value in changes:
        target = spec
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):  # an earlier change may have replaced the encoder
            target[path[-1]] = value
    payload["spec"] = json.dumps(spec)
    fuzzed = folder / "fuzzed.pt"
    torch.save(payload, fuzzed)
    data = fuzzed.read_bytes()
    fuzzed.write_bytes(data[: round(keep * len(data))])
    try:
        critic = load_critic(fuzzed)
    except ValueError:
        return
    scores = critic.pairwise(torch.randn(4, 3), torch.randn(5, 3))
    assert torch.isfinite(scores).all()
