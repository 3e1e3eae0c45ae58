r"""How far is one ranking of candidates from another? (Kendall tau, top-1, bootstrap)"""

from dataclasses import dataclass

import numpy as np
import torch

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.diagnostics._result import check_count, check_probability, make_generator
from pyro_contrast.studies import metrics

# Elements of one (replicates x queries) block of the bootstrap.
_MAX_BLOCK = 2**22


@dataclass(frozen=True, repr=False)
class RankingAgreement:
    r"""Agreement of a method's candidate ranking with a reference ranking, over queries.

    :param float kendall_tau: mean over queries of Kendall's :math:`\tau_b` (queries where
        a row is constant are skipped; ``nan`` if all are).
    :param tuple kendall_tau_interval: bootstrap percentile interval of the mean.
    :param float top1_agreement: fraction of queries whose best candidate is the same.
    :param tuple top1_interval: bootstrap percentile interval of that fraction.
    :param float confidence: level of the intervals.
    :param int num_queries: N.
    :param int num_candidates: K.
    :param Tensor kendall_tau_per_query: ``(N,)`` per-query :math:`\tau_b` (NaN if
        undefined).

    >>> s = torch.randn(8, 4)
    >>> ranking_agreement(-s, s, generator=0).kendall_tau
    -1.0
    """

    kendall_tau: float
    kendall_tau_interval: tuple
    top1_agreement: float
    top1_interval: tuple
    confidence: float
    num_queries: int
    num_candidates: int
    kendall_tau_per_query: torch.Tensor

    def __repr__(self):
        level = f"{100 * self.confidence:g}%"
        tau_lo, tau_hi = self.kendall_tau_interval
        top_lo, top_hi = self.top1_interval
        return (
            f"RankingAgreement(kendall_tau={self.kendall_tau:.3f} [{tau_lo:.3f}, {tau_hi:.3f}], "
            f"top1_agreement={self.top1_agreement:.3f} [{top_lo:.3f}, {top_hi:.3f}] "
            f"({level}), num_queries={self.num_queries}, num_candidates={self.num_candidates})"
        )


def ranking_agreement(scores, reference, *, num_bootstrap=1000, confidence=0.95, generator=None):
    r"""Compare the candidate ranking of ``scores`` with that of ``reference``, per query.

    Both are ``(N, K)`` score matrices over the same candidates (e.g. the direct shortcut
    and the exact bridged log ratio). Per query, Kendall's :math:`\tau_b` measures the
    whole ranking (1: same order, 0: unrelated, -1: reversed) and top-1 agreement whether
    the best candidate is the same. Their means over queries come with bootstrap percentile
    intervals (queries resampled with replacement), the uncertainty due to the finite set
    of queries.

    References:

    1. Kendall (1945), *The treatment of ties in ranking problems*, Biometrika 33.
    2. Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, §13 (percentile
       intervals).

    :param Tensor scores: ``(N, K)`` scores of the method, ``K >= 2``.
    :param Tensor reference: ``(N, K)`` reference scores.
    :param int num_bootstrap: bootstrap replicates.
    :param float confidence: level of the intervals, in (0, 1).
    :param generator: ``torch.Generator`` or int seed of the bootstrap.
    :returns: :class:`RankingAgreement`.

    >>> s = torch.randn(20, 5)
    >>> ranking_agreement(s, 2 * s + 1, generator=0).top1_agreement
    1.0
    """
    scores = _check_scores(scores, "scores")
    reference = _check_scores(reference, "reference")
    if scores.shape != reference.shape:
        raise ValueError(
            f"scores and reference must have the same shape, got {tuple(scores.shape)} and "
            f"{tuple(reference.shape)}"
        )
    num_bootstrap = check_count(num_bootstrap, "num_bootstrap")
    confidence = check_probability(confidence, "confidence")
    generator = make_generator(generator)
    x, y = reference.numpy(), scores.numpy()
    tau = torch.from_numpy(metrics.kendall(x, y))
    top1 = torch.from_numpy(metrics.top1_agreement(x, y))
    defined = ~torch.isnan(tau)
    tau_filled = torch.where(defined, tau, torch.zeros_like(tau))

    num_queries = scores.shape[0]
    tau_reps, top_reps = [], []
    block = max(1, _MAX_BLOCK // num_queries)
    for start in range(0, num_bootstrap, block):
        size = min(block, num_bootstrap - start)
        index = torch.randint(num_queries, (size, num_queries), generator=generator)
        top_reps.append(top1[index].mean(-1))
        # replicates where every resampled tau is undefined stay NaN and are dropped below
        tau_reps.append(tau_filled[index].sum(-1) / defined[index].sum(-1))
    tail = (1 - confidence) / 2
    return RankingAgreement(
        kendall_tau=float(tau[defined].mean()) if bool(defined.any()) else float("nan"),
        kendall_tau_interval=_interval(torch.cat(tau_reps), tail),
        top1_agreement=float(top1.mean()),
        top1_interval=_interval(torch.cat(top_reps), tail),
        confidence=confidence,
        num_queries=num_queries,
        num_candidates=scores.shape[1],
        kendall_tau_per_query=tau,
    )


def _interval(replicates, tail):
    replicates = replicates[~torch.isnan(replicates)].numpy()
    if replicates.size == 0:
        return (float("nan"), float("nan"))
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return (float(low), float(high))


def _check_scores(value, name):
    value = check_finite(as_float_tensor(value, name), name).detach()
    if value.dim() != 2 or value.shape[0] == 0 or value.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (N, K) with N >= 1 and K >= 2, got {tuple(value.shape)}"
        )
    return value.to(torch.float64)
