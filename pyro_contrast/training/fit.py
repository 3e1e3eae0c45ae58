r"""Training critics: mini-batches, validation with early stopping, checkpoints, 3 modalities."""

import math
import numbers

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.training import checkpoint as _ckpt
from pyro_contrast.training import losses as _losses

MODES = (None, "shared", "separate", "oracle")
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
# Config entries that may change when resuming (steps only without a schedule, see fit).
_RESUMABLE = ("steps",)


class History:
    """Per-step record of a :func:`fit` run.

    Attributes: ``step`` (1-based), ``train_loss``, ``lr``, ``temperature`` (one list per
    critic), ``val_step``/``val_loss`` (every ``validate_every`` steps), ``best_step``,
    ``best_val_loss`` and ``stopped_early``.

    >>> History().to_pandas().empty
    True
    """

    _FIELDS = ("step", "train_loss", "lr", "temperature", "val_step", "val_loss")

    def __init__(self, num_critics=1):
        self.step, self.train_loss, self.lr = [], [], []
        self.temperature = [[] for _ in range(num_critics)]
        self.val_step, self.val_loss = [], []
        self.best_step, self.best_val_loss, self.stopped_early = None, None, False

    def __len__(self):
        return len(self.step)

    def __repr__(self):
        last = f", last loss {self.train_loss[-1]:.4g}" if self.train_loss else ""
        return f"History({len(self)} steps{last}, best_step={self.best_step})"

    def to_pandas(self):
        """A DataFrame indexed by step: train/validation loss, learning rate, temperatures."""
        frame = pd.DataFrame(
            {"train_loss": self.train_loss, "lr": self.lr},
            index=pd.Index(self.step, name="step", dtype="int64"),
        )
        frame["val_loss"] = pd.Series(self.val_loss, index=self.val_step, dtype="float64")
        for i, temps in enumerate(self.temperature):
            name = "temperature" if len(self.temperature) == 1 else f"temperature_{i}"
            frame[name] = temps
        return frame

    def state_dict(self):
        state = {k: getattr(self, k) for k in self._FIELDS}
        state.update(
            best_step=self.best_step,
            best_val_loss=self.best_val_loss,
            stopped_early=self.stopped_early,
        )
        return state

    def load_state_dict(self, state):
        for key, value in state.items():
            setattr(self, key, value)


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
    progress=True,
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
    :param bool progress: show a tqdm progress bar with the current loss.
    :param str checkpoint_dir: folder for ``checkpoint.pt`` and ``config.json``.
    :param int checkpoint_every: steps between checkpoints.
    :param bool resume: continue from ``checkpoint_dir`` (starts fresh if it has none).
    :param str mode: ``None``, ``"shared"``, ``"separate"`` or ``"oracle"``.
    :returns: :class:`History`.

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
    tasks, datasets = _prepare_data(data, validation, mode, batch_size, gen)
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
    run = _Run(critics, tasks, datasets, loss, opt, gen, History(len(critics)))
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


class _Dataset:
    """Tensors (or a DataLoader) of one aligned data set, its split and its batch order."""

    def __init__(self, columns=None, loader=None, held_out=None, num_columns=None):
        self.columns, self.loader, self.held_out = columns, loader, held_out
        self.num_columns = num_columns
        self.size = None if columns is None else len(columns[0])
        self.order, self.pos, self._iter = None, 0, None

    def split(self, fraction, batch_size, gen):
        n = self.size
        n_val = int(round(fraction * n)) if self.held_out is None else 0
        if self.held_out is None and fraction > 0 and n_val < 2:
            raise ValueError(
                f"validation={fraction} leaves {n_val} held-out pair(s) of {n}; "
                "use 0 or a larger fraction"
            )
        perm = torch.randperm(n, generator=gen)
        if n_val:
            self.held_out = tuple(col[perm[:n_val]] for col in self.columns)
        self.train_idx = perm[n_val:]
        if batch_size > len(self.train_idx):
            raise ValueError(
                f"batch_size={batch_size} exceeds the {len(self.train_idx)} training pairs"
            )

    def next_batch(self, batch_size, gen):
        if self.loader is not None:
            return self._next_loader_batch()
        if self.order is None or self.pos + batch_size > len(self.order):
            self.order = self.train_idx[torch.randperm(len(self.train_idx), generator=gen)]
            self.pos = 0
        idx = self.order[self.pos : self.pos + batch_size]
        self.pos += batch_size
        return tuple(col[idx] for col in self.columns)

    def _next_loader_batch(self):
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.loader)
            try:
                return _check_columns(next(self._iter), self.num_columns, "DataLoader batch")
            except StopIteration:
                self._iter = None
        raise ValueError("data DataLoader yields no batches")


class _Run:
    def __init__(self, critics, tasks, datasets, loss, opt, gen, history):
        self.critics, self.tasks, self.datasets = critics, tasks, datasets
        self.loss, self.opt, self.gen, self.history = loss, opt, gen, history
        self.step, self.best, self.bad, self.finished = 0, None, 0, False

    def state_dict(self):
        return {
            "step": self.step,
            "finished": self.finished,
            "bad": self.bad,
            "critics": [c.state_dict() for c in self.critics],
            "best": self.best,
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "order": [d.order for d in self.datasets],
            "pos": [d.pos for d in self.datasets],
            "history": self.history.state_dict(),
        }

    def load_state_dict(self, state):
        try:
            for c, sd in zip(self.critics, state["critics"], strict=True):
                c.load_state_dict(sd)
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            for d, order, pos in zip(self.datasets, state["order"], state["pos"], strict=True):
                d.order, d.pos = order, pos
            self.history.load_state_dict(state["history"])
            self.step, self.finished = state["step"], state["finished"]
            self.best, self.bad = state["best"], state["bad"]
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise ValueError(f"checkpoint does not match this critic/data: {err}") from None


def _train(run, config, patience, checkpoint_dir, checkpoint_every, progress):
    steps, batch_size = config["steps"], config["batch_size"]
    base_lr = config["lr"]
    with tqdm(total=steps, initial=run.step, disable=not progress, desc="fit") as bar:
        while run.step < steps and not run.finished:
            for c in run.critics:
                c.train()
            lr = base_lr
            if config["schedule"] == "cosine":
                lr = 0.5 * base_lr * (1 + math.cos(math.pi * run.step / steps))
            for group in run.opt.param_groups:
                group["lr"] = lr
            batches = [d.next_batch(batch_size, run.gen) for d in run.datasets]
            value = sum(_task_loss(run.loss, task, batches) for task in run.tasks)
            if not torch.isfinite(value):
                raise FloatingPointError(
                    f"loss became {value.item()} at step {run.step + 1}; lower lr or check the data"
                )
            run.opt.zero_grad(set_to_none=True)
            value.backward()
            run.opt.step()
            run.step += 1
            h = run.history
            h.step.append(run.step)
            h.train_loss.append(value.item())
            h.lr.append(lr)
            for temps, c in zip(h.temperature, run.critics, strict=True):
                temps.append(c.temperature.item() if hasattr(c, "temperature") else math.nan)
            if run.step % config["validate_every"] == 0 or run.step == steps:
                _validate(run, batch_size, patience)
            if checkpoint_dir is not None and (
                run.step % checkpoint_every == 0 or run.step == steps or run.finished
            ):
                _ckpt.save_training_state(checkpoint_dir, run.state_dict(), config)
            bar.update(1)
            bar.set_postfix(loss=f"{h.train_loss[-1]:.4g}", refresh=False)
    if patience is not None and run.best is not None:
        for c, sd in zip(run.critics, run.best, strict=True):
            c.load_state_dict(sd)


def _validate(run, batch_size, patience):
    if all(d.held_out is None for d in run.datasets):
        return
    for c in run.critics:
        c.eval()
    with torch.no_grad():
        total = 0.0
        for task in run.tasks:
            held = run.datasets[task[1]].held_out
            n = len(held[0])
            size = min(batch_size, n)
            starts = range(0, n - size + 1, size)
            chunks = [tuple(col[i : i + size] for col in held) for i in starts]
            # _task_loss indexes batches by data set: put each chunk at this task's slot.
            total += sum(
                _task_loss(run.loss, task, [None] * task[1] + [chunk]).item() for chunk in chunks
            ) / len(chunks)
    h = run.history
    h.val_step.append(run.step)
    h.val_loss.append(total)
    if h.best_val_loss is None or total < h.best_val_loss:
        h.best_val_loss, h.best_step, run.bad = total, run.step, 0
        run.best = [{k: v.detach().clone() for k, v in c.state_dict().items()} for c in run.critics]
    else:
        run.bad += 1
        if patience is not None and run.bad >= patience:
            run.finished = h.stopped_early = True


def _task_loss(loss, task, batches):
    critic, dataset, col_x, col_y = task
    batch = batches[dataset]
    x = _to_param_dtype(batch[col_x], critic.encoder_x if hasattr(critic, "encoder_x") else None)
    y = _to_param_dtype(batch[col_y], critic.encoder_y if hasattr(critic, "encoder_y") else None)
    value = loss(critic, x, y)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"loss {loss.name!r} must return a scalar tensor")
    return value.reshape(())


def _to_param_dtype(x, encoder):
    for p in encoder.parameters() if encoder is not None else ():
        if p.is_floating_point():
            return x.to(p.dtype)
    return x


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


def _prepare_data(data, validation, mode, batch_size, gen):
    if mode is None:
        layout, tasks = [2], [(0, 0, 1)]
    elif mode == "oracle":
        layout, tasks = [3], [(0, 0, 2)]
    elif _is_pair_of_pairs(data):
        layout, tasks = [2, 2], [(0, 0, 1), (1, 0, 1)]
    else:
        layout, tasks = [3], [(0, 0, 1), (0, 1, 2)]
    held = _split_sets(validation, layout) if isinstance(validation, (tuple, list)) else None
    if isinstance(data, DataLoader):
        if len(layout) != 1:
            raise ValueError("a DataLoader must yield (a, b, c) triplets for this mode")
        if isinstance(validation, numbers.Real) and validation:
            raise ValueError("with a DataLoader pass validation=0 or held-out arrays")
        datasets = [
            _Dataset(loader=data, held_out=held[0] if held else None, num_columns=layout[0])
        ]
    else:
        sets = _split_sets(data, layout, "data")
        datasets = [
            _Dataset(cols, held_out=held[i] if held else None) for i, cols in enumerate(sets)
        ]
        for ds in datasets:
            ds.split(validation if held is None else 0.0, batch_size, gen)
    return tasks, datasets


def _split_sets(data, layout, name="validation"):
    if len(layout) == 2:
        if not _is_pair_of_pairs(data):
            raise ValueError(f"{name} must be ((a, b), (b2, c)) like data")
        return [_check_columns(part, 2, f"{name}[{i}]") for i, part in enumerate(data)]
    return [_check_columns(data, layout[0], name)]


def _is_pair_of_pairs(data):
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(p, (tuple, list)) for p in data)
    )


def _check_columns(columns, count, name):
    if not isinstance(columns, (tuple, list)) or len(columns) != count:
        raise ValueError(f"{name} must be a tuple of {count} arrays, got {type(columns).__name__}")
    columns = tuple(
        check_finite(as_float_tensor(c, f"{name}[{i}]"), f"{name}[{i}]")
        for i, c in enumerate(columns)
    )
    lengths = [len(c) if c.dim() else 0 for c in columns]
    if len(set(lengths)) != 1:
        raise ValueError(f"{name} arrays have mismatched lengths {lengths}")
    if lengths[0] < 2:
        raise ValueError(f"{name} needs at least 2 aligned rows, got {lengths[0]}")
    return columns


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
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if patience is not None and (not isinstance(patience, numbers.Integral) or patience < 1):
        raise ValueError(f"patience must be None or a positive integer, got {patience!r}")
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    if lr == 0:
        raise ValueError("lr must be positive, got 0")
    if schedule not in (None, "cosine"):
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
