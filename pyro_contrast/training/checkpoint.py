r"""Saving critics and training state safely: atomic writes, weights-only loading."""

import json
import math
import os

import torch
from torch import nn

from pyro_contrast._files import atomic_write
from pyro_contrast.critics import Critic

_FORMAT = "pyro_contrast.critic"
_VERSION = 1
STATE_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
#: The most parameter values :func:`load_critic` builds from a file's spec. Every declared
#: layer is also held to the weights the file actually holds before anything is allocated.
MAX_PARAMETERS = 2**31

# Layers rebuilt from a JSON spec: class -> (spec name, constructor attributes). Exact types
# only, so a subclass with its own forward is never silently saved as its parent.
_LAYERS = {
    nn.ReLU: ("relu", ()),
    nn.LeakyReLU: ("leaky_relu", ("negative_slope",)),
    nn.Tanh: ("tanh", ()),
    nn.GELU: ("gelu", ("approximate",)),
    nn.Sigmoid: ("sigmoid", ()),
    nn.SiLU: ("silu", ()),
    nn.ELU: ("elu", ("alpha",)),
    nn.Softplus: ("softplus", ("beta", "threshold")),
    nn.Dropout: ("dropout", ("p",)),
    nn.LayerNorm: ("layer_norm", ("normalized_shape", "eps", "elementwise_affine")),
}
_LAYERS_BY_NAME = {name: (cls, attrs) for cls, (name, attrs) in _LAYERS.items()}


def save_critic(critic, path, *, overwrite=False):
    r"""Save a critic to one ``.pt`` file: its weights plus a JSON spec of how to rebuild it.

    The spec stores the similarity, temperature (and whether it is learnable), the bias flag,
    the bilinear dimensions, the dtype and the encoder architecture for known types
    (``Identity``, ``Linear``, ``Sequential`` of those, common activations, ``LayerNorm``,
    ``Dropout``). Other encoders are stored as ``"custom"``: pass freshly built modules to
    :func:`load_critic`. The file holds only strings and tensors, so it loads with
    ``torch.load(weights_only=True)``; it is written atomically.

    :param Critic critic: the critic to save.
    :param str path: destination file.
    :param bool overwrite: replace an existing file (refused by default).

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> save_critic(Critic(nn.Linear(3, 2), None, "dot"), os.path.join(folder, "c.pt"))
    """
    if not isinstance(critic, Critic):
        raise TypeError(f"critic must be a pyro_contrast.Critic, got {type(critic).__name__}")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"path {path!r} exists; pass overwrite=True to replace it")
    tied = critic.encoder_x is critic.encoder_y
    spec = {
        "format": _FORMAT,
        "version": _VERSION,
        "similarity": critic.similarity,
        "temperature": critic.temperature.item(),
        "learn_temperature": isinstance(critic.log_temperature, nn.Parameter),
        "bias": critic.bias is not None,
        "dim_x": None if critic.weight is None else critic.weight.shape[0],
        "dim_y": None if critic.weight is None else critic.weight.shape[1],
        "dtype": str(critic.log_temperature.dtype).removeprefix("torch."),
        "encoder_x": _encoder_spec(critic.encoder_x),
        "encoder_y": _encoder_spec(critic.encoder_y),
        "tied": tied,
    }
    payload = {"spec": json.dumps(spec), "state_dict": critic.state_dict()}
    write_atomic(path, lambda f: torch.save(payload, f))


def load_critic(path, *, encoder_x=None, encoder_y=None, map_location="cpu"):
    r"""Load a critic saved by :func:`save_critic` (weights-only; nothing is unpickled).

    Encoders of known types are rebuilt from the spec; custom encoders must be passed in
    (their weights are loaded into them, strictly). Anything else — an empty or corrupted
    file, a pickle of arbitrary objects, missing or unexpected weights, a spec declaring more
    parameters than the file holds or than :data:`MAX_PARAMETERS` — raises ``ValueError``
    before the critic is allocated.

    :param str path: file written by :func:`save_critic`.
    :param torch.nn.Module encoder_x: module to load the x encoder weights into.
    :param torch.nn.Module encoder_y: module to load the y encoder weights into.
    :param map_location: passed to :func:`torch.load`.
    :returns: :class:`~pyro_contrast.critics.Critic`.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "c.pt")
    >>> save_critic(Critic(nn.Linear(3, 2), None, "dot"), path)
    >>> load_critic(path).encoder_x
    Linear(in_features=3, out_features=2, bias=True)
    """
    payload = load_weights(path, map_location)
    if (
        not isinstance(payload, dict)
        or set(payload) != {"spec", "state_dict"}
        or not isinstance(payload["spec"], str)
        or not isinstance(payload["state_dict"], dict)
        or not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    ):
        raise ValueError(f"{path!r} is not a pyro-contrast critic file (unexpected content)")
    state = payload["state_dict"]
    try:
        spec = json.loads(payload["spec"])
        if not isinstance(spec, dict):
            raise ValueError("the spec is not a JSON object")
        version = spec["version"]
        if spec["format"] != _FORMAT or not isinstance(version, int) or version > _VERSION:
            raise ValueError(f"format {spec['format']!r} version {version!r}")
        dtype = getattr(torch, spec["dtype"])
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype {spec['dtype']!r}")
        # the spec says what to allocate: hold it to the weights the file holds first
        for name in ("encoder_x", "encoder_y"):
            if (encoder_x if name == "encoder_x" else encoder_y) is None:
                _check_declared(_num_parameters(spec[name], name), state, f"{name}.", name)
        if spec["dim_x"] is not None or spec["dim_y"] is not None:
            declared = _positive(spec["dim_x"], "dim_x") * _positive(spec["dim_y"], "dim_y")
            _check_declared(declared, state, "weight", "the bilinear weight")
        enc_x = encoder_x if encoder_x is not None else _build(spec["encoder_x"], "encoder_x")
        if spec["tied"]:
            enc_y = enc_x if encoder_y is None else encoder_y
        else:
            enc_y = encoder_y if encoder_y is not None else _build(spec["encoder_y"], "encoder_y")
        critic = Critic(
            enc_x,
            enc_y,
            spec["similarity"],
            spec["temperature"],
            spec["learn_temperature"],
            spec["bias"],
            dim_x=spec["dim_x"],
            dim_y=spec["dim_y"],
        ).to(dtype)
    except (KeyError, TypeError, AttributeError, RuntimeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path!r} has an invalid critic spec: {err!r}") from None
    except ValueError as err:
        raise ValueError(f"{path!r} has an invalid critic spec: {err}") from None
    try:
        critic.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(f"{path!r}: weights do not match the critic: {err}") from None
    return critic


def write_atomic(path, write):
    """Write (and replace) ``path`` atomically; see :func:`pyro_contrast._files.atomic_write`."""
    return atomic_write(path, write, overwrite=True)


def load_weights(path, map_location="cpu"):
    """``torch.load(weights_only=True)`` with every failure turned into ``ValueError``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path!r} is empty (0 bytes): not a torch file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling, zip and storage errors all mean "not ours"
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{path!r} is not a weights-only torch file (corrupted, or holds arbitrary "
            f"pickled objects): {type(err).__name__}: {first_line}"
        ) from None


def has_training_state(folder):
    """Whether ``folder`` holds a training checkpoint (state or config)."""
    return any(os.path.exists(os.path.join(folder, f)) for f in (STATE_FILE, CONFIG_FILE))


def save_training_state(folder, state, config):
    """Write the training ``state`` (.pt) and its ``config`` (JSON), each atomically."""
    os.makedirs(folder, exist_ok=True)
    text = json.dumps(config, indent=2, sort_keys=True)
    write_atomic(os.path.join(folder, CONFIG_FILE), lambda f: f.write(text.encode()))
    write_atomic(os.path.join(folder, STATE_FILE), lambda f: torch.save(state, f))


def load_training_state(folder):
    """Read ``(state, config)`` written by :func:`save_training_state`, or ``None``."""
    state_path = os.path.join(folder, STATE_FILE)
    if not os.path.exists(state_path):
        return None
    try:
        with open(os.path.join(folder, CONFIG_FILE)) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint config in {folder!r} is unreadable: {err}") from None
    state = load_weights(state_path)
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{state_path!r} is not a pyro-contrast training checkpoint")
    return state, config


def _encoder_spec(module):
    if type(module) is nn.Identity:
        return {"type": "identity"}
    if type(module) is nn.Linear:
        return {
            "type": "linear",
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
        }
    if type(module) is nn.Sequential:
        return {"type": "sequential", "layers": [_encoder_spec(m) for m in module]}
    if type(module) in _LAYERS:
        name, attrs = _LAYERS[type(module)]
        spec = {"type": name, **{a: _plain(getattr(module, a)) for a in attrs}}
        if type(module) is nn.LayerNorm:
            spec["bias"] = module.bias is not None
        return spec
    return {"type": "custom", "class": f"{type(module).__module__}.{type(module).__qualname__}"}


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _num_parameters(spec, name):
    """How many parameter values building ``spec`` would allocate."""
    kind = spec["type"]
    if kind == "linear":
        size_in = _positive(spec["in_features"], f"{name}.in_features")
        size_out = _positive(spec["out_features"], f"{name}.out_features")
        return size_out * size_in + (size_out if spec["bias"] else 0)
    if kind == "sequential":
        if not isinstance(spec["layers"], list):
            raise ValueError(f"{name}.layers must be a list")
        return sum(_num_parameters(s, f"{name}.{i}") for i, s in enumerate(spec["layers"]))
    if kind == "layer_norm":
        shape = spec["normalized_shape"]
        shape = [shape] if isinstance(shape, int) else shape
        if not isinstance(shape, list):
            raise ValueError(f"{name}.normalized_shape must be a list of ints")
        size = math.prod(_positive(n, f"{name}.normalized_shape") for n in shape)
        return size * spec["elementwise_affine"] * (1 + spec.get("bias", True))
    return 0


def _check_declared(declared, state, prefix, name):
    held = sum(v.numel() for k, v in state.items() if k.startswith(prefix))
    if declared > MAX_PARAMETERS:
        raise ValueError(
            f"{name} declares {declared} parameters, over the limit of {MAX_PARAMETERS}"
        )
    if declared > held:
        raise ValueError(f"{name} declares {declared} parameters but the file holds {held}")


def _build(spec, name):
    kind = spec["type"]
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    if kind == "sequential":
        return nn.Sequential(*(_build(s, name) for s in spec["layers"]))
    if kind in _LAYERS_BY_NAME:
        cls, attrs = _LAYERS_BY_NAME[kind]
        kwargs = {a: spec[a] for a in attrs}
        if cls is nn.LayerNorm:
            kwargs["bias"] = spec["bias"]
        return cls(**kwargs)
    if kind == "custom":
        raise ValueError(
            f"{name} is a custom module ({spec['class']}); build it and pass "
            f"load_critic(path, {name}=module)"
        )
    raise ValueError(f"unknown encoder type {kind!r} for {name}")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
