"""The one training loop: :func:`~pyro_contrast.training.fit.fit` (PyTorch optimizers) and
:func:`~pyro_contrast.training.bayes.svi_fit` (Pyro's SVI) both step through it.

The loop owns what every run shares: the learning-rate schedule, the check that the loss
stays finite, the :class:`~pyro_contrast.training.history.History` record, the progress bar
(shown only on a terminal unless asked), and the hook after each step (validation,
checkpoints, early stopping). A step function does the rest.
"""

import math
import sys

from tqdm.auto import tqdm

SCHEDULES = (None, "cosine")


def learning_rate(base_lr, step, num_steps, schedule):
    """The learning rate of 0-based ``step``: constant, or a cosine decay to zero."""
    if schedule == "cosine":
        return 0.5 * base_lr * (1 + math.cos(math.pi * step / num_steps))
    return base_lr


def train_loop(
    step_fn,
    *,
    num_steps,
    history,
    critics,
    base_lr,
    schedule=None,
    start=0,
    after_step=None,
    progress=None,
    desc="fit",
):
    """Run ``step_fn(lr) -> loss`` from step ``start`` to ``num_steps``.

    :param callable step_fn: takes one optimization step at learning rate ``lr`` and
        returns the loss (a float).
    :param int num_steps: the last step.
    :param History history: appended to after every step.
    :param critics: critics whose temperatures are recorded.
    :param float base_lr: learning rate before the schedule.
    :param str schedule: ``None`` or ``"cosine"``.
    :param int start: steps already taken (a resumed run).
    :param callable after_step: called with the 1-based step number after each step;
        returns ``True`` to stop early.
    :param progress: show a progress bar (``None``: only when standard error is a terminal).
    :returns: the number of steps taken in total.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    step = start
    with tqdm(total=num_steps, initial=start, disable=not progress, desc=desc) as bar:
        while step < num_steps:
            lr = learning_rate(base_lr, step, num_steps, schedule)
            loss = float(step_fn(lr))
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at step {step + 1}; lower lr or check the data"
                )
            step += 1
            history.step.append(step)
            history.train_loss.append(loss)
            history.lr.append(lr)
            for temps, critic in zip(history.temperature, critics, strict=True):
                temps.append(
                    critic.temperature.item() if hasattr(critic, "temperature") else math.nan
                )
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            if after_step is not None and after_step(step):
                break
    return step
