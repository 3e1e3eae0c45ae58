"""The state of a :func:`~pyro_contrast.training.fit.fit` run: what a checkpoint holds to
resume bit for bit, the validation pass with early stopping, and the per-task loss."""

import torch


class Run:
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


def validate(run, batch_size, patience):
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
            # task_loss indexes batches by data set: put each chunk at this task's slot.
            total += sum(
                task_loss(run.loss, task, [None] * task[1] + [chunk]).item() for chunk in chunks
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


def task_loss(loss, task, batches):
    critic, dataset, col_x, col_y = task
    batch = batches[dataset]
    x = to_param_dtype(batch[col_x], critic.encoder_x if hasattr(critic, "encoder_x") else None)
    y = to_param_dtype(batch[col_y], critic.encoder_y if hasattr(critic, "encoder_y") else None)
    value = loss(critic, x, y)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"loss {loss.name!r} must return a scalar tensor")
    return value.reshape(())


def to_param_dtype(x, encoder):
    for p in encoder.parameters() if encoder is not None else ():
        if p.is_floating_point():
            return x.to(p.dtype)
    return x
