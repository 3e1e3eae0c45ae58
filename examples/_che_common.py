"""Shared helpers of the Che & Eysenbach examples: the didactic setting, training, scoring.

Not part of the library: the examples import it by path (``examples/`` is not a package).
The setting follows the authors' didactic experiment (their public code, Sec. 6.1 of the
paper): A, C in 32 dimensions, B in 16, ``pyro_contrast.sim.didactic.DidacticChain``; MLP
encoders; symmetric InfoNCE with a learned temperature per critic; recall@1 among groups of
K = 32 held-out triplets. What we changed, and why, is said on the docs page.
"""

import argparse
import contextlib
import json
import math
import os
import time

import numpy as np
import torch
from _common import (  # noqa: F401
    prepare_out,
    save_figure,
    script,
    write_claims,
    write_json,
    write_text,
)
from torch import nn

import pyro_contrast as pc
from pyro_contrast.ops import logmatmul
from pyro_contrast.sim.didactic import DidacticChain

#: Critics of the paper: cosine, dot, its L2 critic (non-squared distance), and the squared
#: distance of the authors' later code.
SIMILARITIES = ("cosine", "dot", "neg_l2", "neg_sq_l2")
KINDS = ("shared", "separate", "oracle")

#: Defaults of a full run and of ``--quick`` (any flag given explicitly wins over both).
DIDACTIC_FULL = dict(
    noise=2.0,
    num_train=20000,
    num_queries=1024,
    num_candidates=32,
    encoder="mlp",
    hidden=128,
    embed_dim=32,
    steps=800,
    batch_size=256,
    lr=1e-2,
    target_bank_size=5000,
    num_seeds=2,
)
DIDACTIC_QUICK = dict(DIDACTIC_FULL, num_train=4000, num_queries=512, steps=150, num_seeds=1)


# ---------------------------------------------------------------- arguments
def new_parser(description):
    """An argument parser with the flags every Che example shares."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="results folder (new or empty)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--seed", type=int, default=0, help="first seed (problem and training)")
    parser.add_argument("--quick", action="store_true", help="small settings (about a minute)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (0: keep)")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="only recompute claims.json from the results.json already in --out (no training)",
    )
    return parser


def add_didactic_arguments(parser):
    """Flags of the didactic setting; their defaults come from :func:`resolve`."""
    add = parser.add_argument
    add("--noise", type=float, help="noise scale of A and C (paper: 2)")
    add("--num-train", type=int, help="training pairs per modality pair")
    add("--num-queries", type=int, help="held-out triplets (a whole number of groups)")
    add("--num-candidates", type=int, help="K, candidates per query (paper: 32)")
    add("--encoder", choices=("mlp", "linear"), help="encoder family (paper: mlp)")
    add("--hidden", type=int, help="MLP width")
    add("--embed-dim", type=int, help="embedding dimension")
    add("--steps", type=int, help="optimizer steps per model")
    add("--batch-size", type=int)
    add("--lr", type=float)
    add("--target-bank-size", type=int, help="C items of the exact method's normalizer")
    add("--num-seeds", type=int, help="independent problems and trainings")
    return parser


def resolve(args, full=DIDACTIC_FULL, quick=DIDACTIC_QUICK):
    """Fill the flags left at ``None`` from the full or the quick preset; check them."""
    preset = quick if args.quick else full
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    check_positive(
        args,
        ("num_train", "num_queries", "hidden", "embed_dim", "steps", "batch_size"),
    )
    check_positive(args, ("target_bank_size", "num_seeds"))
    if not args.noise > 0 or not args.lr > 0:
        raise ValueError("--noise and --lr must be positive")
    if args.num_candidates < 2 or args.num_queries < args.num_candidates:
        raise ValueError("--num-candidates must be >= 2 and <= --num-queries")
    if args.batch_size > args.num_train:
        raise ValueError("--batch-size must not exceed --num-train")
    args.num_queries -= args.num_queries % args.num_candidates
    return args


def check_positive(args, names):
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def finish(out, args, rows, claims, text, started, files, plot=None, **extra):
    """Write an example's results folder and return its summary.

    ``started`` is ``(time.perf_counter(), time.process_time())`` at the start; ``text`` the
    printed table (the total time is appended); ``files`` maps ``table.csv`` and the like to
    their text; ``plot`` is ``(function, file name)``, drawn unless ``--no-plots``; ``extra``
    goes into ``results.json`` after the claims.
    """
    result = {"settings": vars(args), "rows": rows, "claims": claims, **extra}
    result["seconds"] = time.perf_counter() - started[0]
    result["cpu_seconds"] = time.process_time() - started[1]
    text += f"\n\ntotal {result['seconds']:.0f} s"
    print(text)
    write_text(os.path.join(out, "table.txt"), text + "\n")
    for name, content in files.items():
        write_text(os.path.join(out, name), content)
    write_json(os.path.join(out, "results.json"), result)
    write_claims(out, claims)
    if plot is not None and not args.no_plots:
        draw, name = plot
        draw(rows, args, os.path.join(out, name))
    return result


def rescore(out, claims_fn):
    """Recompute ``claims.json`` from a finished run's ``results.json`` with ``claims_fn(rows,
    settings)``: the verdict rules can change without training again (the rows, i.e. every
    measured number, stay as they were). ``results.json`` records that it was rescored."""
    path = os.path.join(os.path.abspath(out), "results.json")
    if not os.path.isfile(path):
        raise ValueError(f"--rescore needs a finished run: {path} not found")
    with open(path, encoding="utf-8") as stream:
        result = json.load(stream)
    claims = claims_fn(result["rows"], argparse.Namespace(**result["settings"]))
    result["claims"], result["rescored"] = claims, True
    write_json(path, result)
    write_claims(os.path.dirname(path), claims)
    return result


@contextlib.contextmanager
def num_threads(count):
    """Run with ``count`` torch threads (0: unchanged), restoring the setting afterwards.

    Small MLPs are dominated by per-op overhead; on a busy 2-core machine a second thread
    only adds synchronization.
    """
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def write_figure(path, figure):
    """Save a matplotlib figure as PNG atomically (kept small: modest dpi)."""
    save_figure(figure, path, dpi=90)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- problem, critics, training
def make_chain(args, seed, **variant):
    """The paper's didactic problem number ``seed`` (A, C 32-d, B 16-d)."""
    return DidacticChain(noise_a=args.noise, noise_c=args.noise, seed=seed, **variant)


def encoder(dim_in, args):
    """The authors' encoder family: a 3-layer MLP with batch norm after the first layer."""
    if args.encoder == "linear":
        return nn.Linear(dim_in, args.embed_dim)
    h = args.hidden
    return nn.Sequential(
        nn.Linear(dim_in, h),
        nn.BatchNorm1d(h),
        nn.ReLU(),
        nn.Linear(h, h),
        nn.ReLU(),
        nn.Linear(h, args.embed_dim),
    )


def make_critics(chain, similarity, kind, args, seed):
    """Critics of one model: ``"shared"`` / ``"separate"`` B encoders, or an A–C ``"oracle"``.

    Each critic has its own learned temperature, initialized to 1 (logit scale 1).
    """
    torch.manual_seed(seed)
    options = dict(similarity=similarity, temperature=1.0, learn_temperature=True)
    if kind == "oracle":
        return (pc.Critic(encoder(chain.dim_a, args), encoder(chain.dim_c, args), **options),)
    encoder_b = encoder(chain.dim_b, args)
    other_b = encoder_b if kind == "shared" else encoder(chain.dim_b, args)
    critic_ab = pc.Critic(encoder(chain.dim_a, args), encoder_b, **options)
    critic_bc = pc.Critic(other_b, encoder(chain.dim_c, args), **options)
    return critic_ab, critic_bc


def train(critics, chain, kind, args, seed):
    """Train on fresh samples with ``pc.fit``; returns ``(final loss, seconds)``.

    The bridged models see (A, B) and (B, C) pairs from *independent* triplets, never a full
    triplet; the oracle sees (A, C) pairs.
    """
    started = time.perf_counter()
    n = args.num_train
    if kind == "oracle":
        data, mode = chain.sample(n), "oracle"
    else:
        a, b, _ = chain.sample(n)
        _, b2, c2 = chain.sample(n)
        data, mode = ((a, b), (b2, c2)), kind
    history = pc.fit(
        critics if kind != "oracle" else critics[0],
        data,
        loss="symmetric_infonce",
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule="cosine",
        seed=seed,
        mode=mode,
        validation=0.0,
        progress=False,
    )
    for critic in critics:
        critic.eval()  # batch norm: running statistics from here on
    return float(history.train_loss[-1]), time.perf_counter() - started


class Embedded:
    """A trained model's embeddings of the evaluation data, and bridges over them.

    Scoring is done on precomputed embeddings with ``Critic.from_embeddings`` critics that
    carry the trained temperatures; the bank holds one view per adjacent critic of the same
    B items (``pc.Bank(views=...)``), which is how two separately trained B encoders meet.
    """

    def __init__(self, critics, kind, queries, candidates, bank_b=None, targets_c=None):
        self.kind, self.similarity = kind, critics[0].similarity
        first, last = critics[0], critics[-1]
        self.temperatures = [c.temperature.item() for c in critics]
        with torch.no_grad():
            self.a = first.encode_x(queries)
            self.c = last.encode_y(candidates)
            if kind != "oracle":
                self.bank_left = first.encode_y(bank_b)
                self.bank_right = last.encode_x(bank_b)
                self.targets = last.encode_y(targets_c)

    def critics(self, ignore_scale=False):
        """Embedding-level critics (temperature 1 with ``ignore_scale``, as in the authors'
        original LogSumExp, which dropped the learned logit scale)."""
        temps = [1.0] * len(self.temperatures) if ignore_scale else self.temperatures
        return [pc.Critic.from_embeddings(self.similarity, t) for t in temps]

    def bridge(self, size, *, own_b=None, ignore_scale=False):
        """A ``pc.Bridge`` over the first ``size`` bank items.

        ``own_b``: embeddings (left, right) of the queries' own B values, put first into the
        bank (the authors' evaluation protocol, which leaks each query's bridge item).
        """
        left, right = self.bank_left[:size], self.bank_right[:size]
        if own_b is not None:
            rest = size - own_b[0].shape[0]
            if rest < 0:
                raise ValueError("the bank must be at least as large as the queries' own B")
            left = torch.cat([own_b[0], left[:rest]])
            right = torch.cat([own_b[1], right[:rest]])
        bank = pc.Bank(views=(left, right))
        return pc.Bridge(
            self.critics(ignore_scale), [bank], target_bank=self.targets, progress=False
        )

    def own_b(self, critics, own_b):
        """Embeddings (left, right) of raw B values by the trained critics."""
        with torch.no_grad():
            return critics[0].encode_y(own_b), critics[-1].encode_x(own_b)

    def direct(self, group):
        """The shortcut: the A embedding against the C embedding (the oracle: its critic)."""
        critic = self.critics()[0]
        return critic.pairwise_embeddings(self.a[group], self.c[group])


# ---------------------------------------------------------------- scoring in groups of K
def groups(num_queries, size):
    """Slices of consecutive groups of ``size`` held-out triplets (each query's candidates are
    the C items of its own group; the positive sits at the query's own position)."""
    return [slice(i, i + size) for i in range(0, num_queries - size + 1, size)]


def grouped_recall(score, num_queries, size):
    """Per-query recall@1 (ties shared at random in expectation) of ``score(group) -> (K, K)``,
    numpy (num_queries,); also returns the seconds spent."""
    started = time.perf_counter()
    values = []
    with torch.no_grad():
        for group in groups(num_queries, size):
            scores = score(group).double().numpy()
            values.append(_recall_at_1(scores))
    return np.concatenate(values), time.perf_counter() - started


def _recall_at_1(scores):
    positive = np.diagonal(scores)[:, None]
    greater = (scores > positive).sum(1)
    ties = (scores == positive).sum(1) - 1
    return np.where(greater == 0, 1.0 / (ties + 1.0), 0.0)


def bridge_recall(bridge, embedded, method, size):
    """Per-query recall@1 of ``bridge.log_ratio(..., method)`` on the embedded queries."""
    return grouped_recall(
        lambda g: bridge.log_ratio(embedded.a[g], embedded.c[g], method=method),
        embedded.a.shape[0],
        size,
    )


# ---------------------------------------------------------------- references from the truth
def bayes_recall(chain, a, c, size):
    """Recall@1 of the Bayes-optimal ranking by the true PMI (the ceiling of any method)."""
    return grouped_recall(lambda g: chain.log_ratio(a[g], c[g]), a.shape[0], size)[0]


def bridged_recall(chain, a, c, size):
    """Recall@1 of Lemma 1's marginal with the true conditionals: the A ⊥ C | B ceiling, the
    best any estimator bridging through B can reach with an infinite bank."""
    return grouped_recall(lambda g: chain.log_ratio_bridged(a[g], c[g]), a.shape[0], size)[0]


def true_lse_recall(chain, a, c, bank_b, size):
    """Recall@1 of the LogSumExp estimator over ``bank_b`` with the *true* PMIs as critics
    (the authors' "Monte Carlo with exact density ratios"): the bank's own error."""

    def score(g):
        left = chain.log_ratio_ab(a[g], bank_b)
        right = chain.log_ratio_bc(bank_b, c[g])
        return logmatmul(left, right)

    return grouped_recall(score, a.shape[0], size)[0]


# ---------------------------------------------------------------- summaries and claims
def mean_and_se(values):
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(se)


def summary(values):
    """``{"recall", "se"}`` of pooled per-query values (SE over queries)."""
    mean, se = mean_and_se(values)
    return {"recall": round(mean, 4), "se": round(se, 4)}


def claim(claim_id, text, paper, ours, verdict, **extra):
    """One entry of ``claims.json``."""
    return {
        "id": claim_id,
        "claim": text,
        "paper": paper,
        "ours": ours,
        "verdict": verdict,
        **extra,
    }


def rounded(mapping, digits=3):
    return {key: (None if v is None else round(float(v), digits)) for key, v in mapping.items()}
