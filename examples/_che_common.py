"""Shared helpers of the Che & Eysenbach examples: results folders, training, scoring, intervals.

Not part of the library: the examples import it by path (``examples/`` is not a package).
"""

import argparse
import contextlib
import math

import numpy as np
import torch
from _common import prepare_out, save_figure, write_bytes, write_json, write_text  # noqa: F401

import pyro_contrast as pc
from pyro_contrast.studies import metrics as _metrics

SIMILARITIES = ("cosine", "dot", "neg_sq_l2")


# ---------------------------------------------------------------- results folder and files
def write_figure(path, figure):
    """Save a matplotlib figure as PNG atomically (kept small: modest dpi)."""
    save_figure(figure, path, dpi=90)


@contextlib.contextmanager
def num_threads(count):
    """Run with ``count`` torch threads, restoring the previous setting afterwards.

    Tiny linear critics are dominated by per-op overhead; on a busy 2-core machine two
    threads made each training step ten times slower than one.
    """
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def new_parser(description):
    """An argument parser with the results-folder flags every example shares."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="results folder (must be empty)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--seed", type=int, default=0, help="first seed (chain and training)")
    return parser


def add_training_arguments(parser, *, num_queries=2048):
    """Flags of the chain experiments: held-out sizes, critic training, threads, plots."""
    parser.add_argument("--num-train", type=int, default=10000, help="training triplets")
    parser.add_argument("--num-queries", type=int, default=num_queries, help="held-out triplets")
    parser.add_argument("--num-candidates", type=int, default=32, help="K, group size")
    parser.add_argument("--dim", type=int, default=8, help="embedding dimension")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--loss", default="symmetric_infonce", choices=sorted(pc.losses.LOSSES))
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (0: keep)")
    parser.add_argument("--no-plots", action="store_true")
    return parser


def check_training_arguments(args, extra=()):
    """Clear errors for the flags of :func:`add_training_arguments` (plus ``extra`` counts)."""
    check_positive(args, ("num_train", "num_queries", "dim", "steps", "batch_size", *extra))
    if args.num_candidates < 2 or args.num_queries < args.num_candidates:
        raise ValueError("--num-candidates must be >= 2 and <= --num-queries")


def check_positive(args, names):
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


# ---------------------------------------------------------------- critics and training
def make_critics(chain, similarity, mode, dim, seed):
    """Critics with linear encoders for a ``fit`` mode ("shared", "separate" or "oracle")."""
    torch.manual_seed(seed)
    linear = torch.nn.Linear
    options = dict(temperature=1.0, learn_temperature=True)
    if mode == "oracle":
        return pc.Critic(linear(chain.dim_a, dim), linear(chain.dim_c, dim), similarity, **options)
    encoder_b = linear(chain.dim_b, dim)
    other_b = encoder_b if mode == "shared" else linear(chain.dim_b, dim)
    critic_ab = pc.Critic(linear(chain.dim_a, dim), encoder_b, similarity, **options)
    critic_bc = pc.Critic(other_b, linear(chain.dim_c, dim), similarity, **options)
    return critic_ab, critic_bc


def train(critics, data, mode, args, seed):
    """``pc.fit`` with the example's settings; returns the final training loss."""
    history = pc.fit(
        critics,
        data,
        loss=args.loss,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=seed,
        mode=mode,
        validation=0.0,
        progress=False,
    )
    return history.train_loss[-1]


# ---------------------------------------------------------------- scoring in groups of K
def recall_at_1(scores, size):
    """Per-query recall@1 (ties shared at random in expectation), numpy (N,)."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.tile(np.arange(size), scores.shape[0] // size)
    return _metrics.recall_at_k(scores, positives, 1)


def kl_to_truth(truth, scores):
    """Per-query KL(p_truth || p_method) of the candidate conditionals, numpy (N,)."""
    return _metrics.kl_divergence(np.asarray(truth, np.float64), np.asarray(scores, np.float64))


def grouped(full, size):
    return _metrics.grouped_candidates(np.asarray(full, dtype=np.float64), size)


# ---------------------------------------------------------------- intervals
def t_interval(values, confidence=0.95, bounds=(None, None)):
    """Mean and a Student-t interval across independent runs (seeds); half-width 0 for one.

    ``bounds`` clips the interval to the metric's range (recall in [0, 1], KL >= 0).
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1)
    half /= math.sqrt(len(values))
    low, high = mean - half, mean + half
    if bounds[0] is not None:
        low = max(low, bounds[0])
    if bounds[1] is not None:
        high = min(high, bounds[1])
    return mean, low, high


def mean_and_se(values):
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(se)


def format_interval(mean, lower, upper, digits=3):
    return f"{mean:.{digits}f} [{lower:.{digits}f}, {upper:.{digits}f}]"


def ceiling_check(per_query, ceiling_name="bayes", num_se=3.0):
    """Check the Bayes ceiling is not beaten by more than its Monte Carlo error.

    The Bayes-optimal ranking maximizes expected recall@1, so on the same queries any
    method's mean recall minus the ceiling's is <= 0 in expectation; its sample estimate is
    held to ``num_se`` standard errors of the paired per-query difference (a one-sided bound
    a correct method exceeds with probability ~0.1% per comparison).

    :returns: list of dicts ``{method, excess, se, ok}``.
    """
    ceiling = np.asarray(per_query[ceiling_name], dtype=np.float64)
    rows = []
    for name, values in per_query.items():
        if name == ceiling_name:
            continue
        excess, se = mean_and_se(np.asarray(values, dtype=np.float64) - ceiling)
        rows.append({"method": name, "excess": excess, "se": se, "ok": excess <= num_se * se})
    return rows
