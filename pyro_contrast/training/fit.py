r"""Training critics: :func:`fit`, with validation, early stopping, checkpoints, 3 modalities."""

import math
import numbers

import torch
from torch import nn

from pyro_contrast._validation import check_int
from pyro_contrast.training import checkpoint as _ckpt
from pyro_contrast.training import losses as _losses
from pyro_contrast.training._data import prepare_data
from pyro_contrast.training._run import Run, task_loss, validate
from pyro_contrast.training.history import History
from pyro_contrast.training.loop import SCHEDULES, train_loop

MODES = (None, "shared", "separate", "oracle")
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
# Config entries that may change when resuming (steps only without a schedule, see fit).
_RESUMABLE = ("steps",)


def fit(
    critic,
    data,
    loss="infonce",
    *,
    steps=1000,
    batch_size=256,
    lr=1e-3,
    optimizer="adam",
    schedule=None,
    weight_decay=0.0,
    validation=0.1,
    patience=None,
    validate_every=25,
    seed=0,
    progress=None,
    checkpoint_dir=None,
    checkpoint_every=100,
    resume=False,
    mode=None,
):
    r"""Train one critic on (x, y) pairs, or two critics on a three-modality chain.

    Each step draws a mini-batch without replacement (epochs reshuffled by a local
    ``torch.Generator`` seeded by ``seed``, so CPU runs are deterministic and the global RNG
    is untouched) and takes one optimizer step on ``loss`` (see
    :mod:`pyro_contrast.training.losses`).
    A held-out split (``validation`` fraction, or explicit held-out arrays) is scored every
    ``validate_every`` steps; with ``patience`` training stops after that many validations
    without improvement, and the best weights are restored at the end.

    Three modalities, ``data=(a, b, c)`` triplets (or two pair sets ``((a, b), (b2, c))``):

    - ``mode="shared"``: ``critic=(critic_ab, critic_bc)`` trained jointly (summed losses) with
      ONE B encoder: the caller ties it, ``critic_ab.encoder_y is critic_bc.encoder_x`` (fit
      checks, and never rewires user modules).
    - ``mode="separate"``: the same two critics with two distinct B encoders.
    - ``mode="oracle"``: one critic trained directly on (a, c) pairs, for comparisons.

    With ``checkpoint_dir`` the model, optimizer and RNG states are written (atomically) every
    ``checkpoint_every`` steps and at the end; ``resume=True`` continues from them and gives,
    on CPU, bit-for-bit the result of an uninterrupted run (tensor data; a ``DataLoader``
    restarts its iterator). Without ``schedule`` a resumed run may ask for more ``steps``.

    :param critic: a :class:`~pyro_contrast.critics.Critic`, or two for ``"shared"`` /
        ``"separate"``.
    :param data: ``(x, y)`` tensors or arrays, triplets for the 3-modality modes, or a
        ``DataLoader`` yielding such tuples.
    :param loss: a name in :data:`pyro_contrast.training.losses.LOSSES`, a ``BatchLoss``, or a
        callable of the (B, B) score matrix.
    :param int steps: number of optimizer steps.
    :param int batch_size: pairs per mini-batch (≥ 2, ≤ number of training pairs).
    :param float lr: learning rate.
    :param optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"`` or an optimizer class.
    :param str schedule: ``None`` (constant) or ``"cosine"`` (cosine decay to 0).
    :param float weight_decay: weight decay passed to the optimizer.
    :param validation: held-out fraction in [0, 1), or held-out data shaped like ``data``.
    :param int patience: validations without improvement before stopping (``None``: never).
    :param int validate_every: steps between validations.
    :param int seed: seed of the split and the batch order.
    :param bool progress: show a tqdm progress bar with the current loss (default: only
        when standard error is a terminal).
    :param str checkpoint_dir: folder for ``checkpoint.pt`` and ``config.json``.
    :param int checkpoint_every: steps between checkpoints.
    :param bool resume: continue from ``checkpoint_dir`` (starts fresh if it has none).
    :param str mode: ``None``, ``"shared"``, ``"separate"`` or ``"oracle"``.
    :returns: :class:`~pyro_contrast.training.history.History`.

    >>> from pyro_contrast.critics import Critic
    >>> x = torch.randn(64, 3)
    >>> critic = Critic(nn.Linear(3, 3), nn.Linear(3, 3), "dot")
    >>> fit(critic, (x, x + 0.1 * torch.randn(64, 3)), steps=5, batch_size=16,
    ...     progress=False).to_pandas().shape[0]
    5
    """
    critics = _check_critics(critic, mode)
    loss = _losses.get(loss)
    validation = 0.0 if validation is None else validation
    _check_options(
        steps,
        batch_size,
        lr,
        weight_decay,
        validation,
        patience,
        validate_every,
        checkpoint_every,
        schedule,
        seed,
    )
    if patience is not None and not isinstance(validation, (tuple, list)) and not validation:
        raise ValueError("patience needs a validation split (validation > 0)")
    gen = torch.Generator().manual_seed(int(seed))
    tasks, datasets = prepare_data(data, validation, mode, batch_size, gen)
    tasks = [(c, *task) for c, task in zip(critics, tasks, strict=True)]
    params = list(nn.ModuleList(critics).parameters())
    if not any(p.requires_grad for p in params):
        raise ValueError("the critic has no trainable parameters")
    opt = _make_optimizer(optimizer, [p for p in params if p.requires_grad], lr, weight_decay)
    config = {
        "loss": loss.config(),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer if isinstance(optimizer, str) else optimizer.__qualname__,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "patience": patience,
        "validation": validation if isinstance(validation, numbers.Real) else "held-out",
        "validate_every": validate_every,
        "seed": seed,
        "mode": mode,
        "num_critics": len(critics),
        "sizes": [d.size for d in datasets],
    }
    run = Run(critics, tasks, datasets, loss, opt, gen, History(len(critics)))
    if checkpoint_dir is not None:
        saved = _ckpt.load_training_state(checkpoint_dir) if resume else None
        if saved is not None:
            _check_config(saved[1], config, schedule)
            run.load_state_dict(saved[0])
        elif not resume and _ckpt.has_training_state(checkpoint_dir):
            raise ValueError(
                f"checkpoint_dir {checkpoint_dir!r} already holds a checkpoint; "
                "pass resume=True to continue it, or choose another folder"
            )
    was_training = [c.training for c in critics]
    try:
        _train(run, config, patience, checkpoint_dir, checkpoint_every, progress)
    finally:
        for c, flag in zip(critics, was_training, strict=True):
            c.train(flag)
    return run.history


def _check_critics(critic, mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    critics = list(critic) if isinstance(critic, (list, tuple)) else [critic]
    want = 2 if mode in ("shared", "separate") else 1
    if len(critics) != want:
        raise ValueError(f"mode={mode!r} trains {want} critic(s), got {len(critics)}")
    for c in critics:
        if not isinstance(c, nn.Module) or not hasattr(c, "pairwise"):
            raise TypeError(f"critic must be a pyro_contrast.Critic, got {type(c).__name__}")
    if mode == "shared" and critics[0].encoder_y is not critics[1].encoder_x:
        raise ValueError(
            "mode='shared' needs critic_ab.encoder_y to be the same module object "
            "as critic_bc.encoder_x (build both critics with one B encoder)"
        )
    if mode == "separate" and critics[0].encoder_y is critics[1].encoder_x:
        raise ValueError("mode='separate' got one shared B encoder; use mode='shared'")
    return critics


def _make_optimizer(optimizer, params, lr, weight_decay):
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        optimizer = OPTIMIZERS[optimizer]
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(f"optimizer must be a name or an Optimizer class, got {optimizer!r}")
    return optimizer(params, lr=lr, weight_decay=weight_decay)


def _check_options(
    steps,
    batch_size,
    lr,
    weight_decay,
    validation,
    patience,
    validate_every,
    checkpoint_every,
    schedule,
    seed,
):
    for name, value, low in (
        ("steps", steps, 1),
        ("batch_size", batch_size, 2),
        ("validate_every", validate_every, 1),
        ("checkpoint_every", checkpoint_every, 1),
        ("seed", seed, 0),
    ):
        check_int(value, name, low)
    if patience is not None and (not isinstance(patience, numbers.Integral) or patience < 1):
        raise ValueError(f"patience must be None or a positive integer, got {patience!r}")
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    if lr == 0:
        raise ValueError("lr must be positive, got 0")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    if isinstance(validation, numbers.Real) and not 0 <= validation < 1:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation!r}")
    if not isinstance(validation, (numbers.Real, tuple, list)) and validation is not None:
        raise TypeError(f"validation must be a fraction or held-out data, got {validation!r}")


def _check_config(saved, config, schedule):
    movable = _RESUMABLE if schedule is None else ()
    diff = sorted(
        k for k in set(saved) | set(config) if k not in movable and saved.get(k) != config.get(k)
    )
    if diff:
        details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {config.get(k)!r}" for k in diff)
        raise ValueError(f"resume=True with settings that differ from the checkpoint ({details})")


def _train(run, config, patience, checkpoint_dir, checkpoint_every, progress):
    steps, batch_size = config["steps"], config["batch_size"]

    def step_fn(lr):
        for c in run.critics:
            c.train()
        for group in run.opt.param_groups:
            group["lr"] = lr
        batches = [d.next_batch(batch_size, run.gen) for d in run.datasets]
        value = sum(task_loss(run.loss, task, batches) for task in run.tasks)
        if not torch.isfinite(value):
            return value.item()  # the loop raises, naming the step
        run.opt.zero_grad(set_to_none=True)
        value.backward()
        run.opt.step()
        return value.item()

    def after_step(step):
        run.step = step
        if step % config["validate_every"] == 0 or step == steps:
            validate(run, batch_size, patience)
        if checkpoint_dir is not None and (
            step % checkpoint_every == 0 or step == steps or run.finished
        ):
            _ckpt.save_training_state(checkpoint_dir, run.state_dict(), config)
        return run.finished

    if not run.finished:
        train_loop(
            step_fn,
            num_steps=steps,
            history=run.history,
            critics=run.critics,
            base_lr=config["lr"],
            schedule=config["schedule"],
            start=run.step,
            after_step=after_step,
            progress=progress,
        )
    if patience is not None and run.best is not None:
        for c, sd in zip(run.critics, run.best, strict=True):
            c.load_state_dict(sd)


__all__ = ["fit"]  # History lives in pyro_contrast.training.history (imported here too)
