"""The record of a training run: losses, learning rates, temperatures, validation."""

import pandas as pd


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
