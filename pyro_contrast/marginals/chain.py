r"""Exact and LogSumExp marginalization of a chain of critics over banks.

Every hop is a log-space matrix product :math:`\mathrm{out}_{nk} = \log \sum_m
\exp(L_{nm} + R_{mk})` computed by :func:`pyro_contrast.ops.logmatmul`, so no
:math:`N \times K \times M` tensor is ever formed. These functions work on critics and
already-encoded embeddings; :class:`pyro_contrast.Bridge` is the public front end.

References:

1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities* (Lemma 1; the LogSumExp estimator).
"""

import math

import torch

from pyro_contrast.ops import logmatmul

# Elements of one (rows x targets) score block when a bank chunk meets the C normalizer set;
# bounds memory at 2**24 floats (64 MB) per block however large the target set is.
_MAX_BLOCK = 2**24


def left_scores(left_critics, queries, bank_left, log_weights):
    r"""Scores :math:`\sum_j f_j(a_j, b_m) + \log w_m` of queries against bank items (N, M).

    Several left critics (a hub with observed modalities :math:`a_1, a_2, \ldots`, assumed
    conditionally independent given :math:`b`) add their scores.
    """
    scores = sum(
        c.pairwise_embeddings(u, z)
        for c, u, z in zip(left_critics, queries, bank_left, strict=True)
    )
    if log_weights is not None:
        scores = scores + log_weights.to(scores.dtype)
    return scores


def log_normalizer(critic, bank_right, targets):
    r"""``log Z(b_m) = log mean_t exp f(b_m, c_t)`` over the C normalizer set, shape (M,)."""
    rows = max(1, _MAX_BLOCK // max(targets.shape[0], 1))
    parts = [
        torch.logsumexp(critic.pairwise_embeddings(bank_right[i : i + rows], targets), -1)
        for i in range(0, bank_right.shape[0], rows)
    ]
    return torch.cat(parts) - math.log(targets.shape[0])


def three_chain_partials(
    *views_and_weights, left, right, queries, candidates, targets, method, log_z=None
):
    r"""Log-space partial sums of one bank chunk (raw views) for a chain A – B – C.

    Encodes the chunk with each adjacent critic and returns :func:`encoded_partials`. This is
    the unit of work of distributed (Dask) reductions.
    """
    *views, log_weights = views_and_weights
    bank_left, bank_right = encode_chunk(left, right, views)
    return encoded_partials(
        bank_left,
        bank_right,
        log_weights,
        left=left,
        right=right,
        queries=queries,
        candidates=candidates,
        targets=targets,
        method=method,
        log_z=log_z,
    )


def encode_chunk(left, right, views):
    """A bank chunk as seen by the left critics (one embedding each) and the right critic."""
    bank_left = [c.encode_y(views[j if len(views) > 1 else 0]) for j, c in enumerate(left)]
    return bank_left, right.encode_x(views[-1])


def encoded_partials(
    bank_left,
    bank_right,
    log_weights,
    *,
    left,
    right,
    queries,
    candidates,
    targets,
    method,
    log_z=None,
):
    r"""Log-space partial sums of one encoded bank chunk for a chain A – B – C.

    Returns ``(numerator, denominator)`` with shapes (N, K) and (N,):

    - ``"exact"``: :math:`\log \sum_m e^{F_{nm}} e^{G_{mk} - \log Z(b_m)}` and
      :math:`\log \sum_m e^{F_{nm}}`;
    - ``"lse"``: :math:`\log \sum_m e^{F_{nm} + G_{mk}}` and :math:`\log \sum_m w_m`.

    Partials of disjoint chunks combine by ``logaddexp``; the estimate is their difference.
    The chunk is scored once: with no ``targets`` the C normalizer comes from the same
    scores as the numerator; ``log_z`` optionally supplies it (it does not depend on the
    queries, so a caller may cache it).
    """
    scores_left = left_scores(left, queries, bank_left, log_weights)
    scores_right = right.pairwise_embeddings(bank_right, candidates)
    if method == "exact":
        num_candidates = candidates.shape[0]
        if log_z is None and targets is None:
            # Normalized over the candidates themselves: one fused pass, and since each row of
            # p(c | b_m) then sums to one over k, the denominator log sum_m e^{F_nm} is the
            # numerator's log-sum over k (minus log K) -- no second pass over F.
            # (log K, the normalizer's mean, is added to the small result, not to M x K)
            numerator = logmatmul(scores_left, scores_right.log_softmax(-1))
            denominator = torch.logsumexp(numerator, -1)
            return numerator + math.log(num_candidates), denominator
        if log_z is not None:
            log_z = log_z.to(scores_right.dtype)
        else:
            log_z = log_normalizer(right, bank_right, targets)
        numerator = logmatmul(scores_left, scores_right - log_z.unsqueeze(-1))
        denominator = torch.logsumexp(scores_left, -1)
    else:
        numerator = logmatmul(scores_left, scores_right)
        if log_weights is None:
            count = torch.tensor(float(bank_right.shape[0]), dtype=numerator.dtype)
            denominator = count.log().expand(numerator.shape[0])
        else:
            denominator = torch.logsumexp(log_weights.to(numerator.dtype), -1).expand(
                numerator.shape[0]
            )
    return numerator, denominator


def transition(critic, bank_right, bank_next, log_weights, normalized):
    r"""Log transition matrix between consecutive banks (M_i, M_{i+1}): the row-normalized
    :math:`\log p(b'_{m'} \mid b_m)` if ``normalized`` else the raw scores plus log weights."""
    scores = critic.pairwise_embeddings(bank_right, bank_next)
    if log_weights is not None:
        scores = scores + log_weights.to(scores.dtype)
    return scores.log_softmax(-1) if normalized else scores


def forward_messages(hops, queries, encoded_banks, normalized):
    r"""Messages :math:`\alpha_i[n, m] = \log p(b^{(i)}_m \mid a_n)` for every bank (exact),
    or the unnormalized path sums of the LogSumExp estimator (``normalized=False``)."""
    left_views, _, weights = encoded_banks[0]
    alpha = left_scores(hops[0], queries, left_views, weights)
    alpha = alpha.log_softmax(-1) if normalized else alpha
    messages = [alpha]
    for i in range(1, len(encoded_banks)):
        _, right_prev, _ = encoded_banks[i - 1]
        left_views, _, weights = encoded_banks[i]
        step = transition(hops[i][0], right_prev, left_views[0], weights, normalized)
        alpha = logmatmul(alpha, step)
        messages.append(alpha)
    return messages


def backward_messages(hops, encoded_banks, last_scores):
    r"""Messages :math:`\beta_i[n, m] = \log p(c_n \mid b^{(i)}_m)` for aligned targets, from
    ``last_scores`` (N, M_L) = :math:`\log p(c_n \mid b^{(L)}_m)`."""
    beta = last_scores
    messages = [beta]
    for i in range(len(encoded_banks) - 1, 0, -1):
        _, right_prev, _ = encoded_banks[i - 1]
        left_views, _, weights = encoded_banks[i]
        step = transition(hops[i][0], right_prev, left_views[0], weights, normalized=True)
        beta = logmatmul(beta, step.transpose(-1, -2))
        messages.append(beta)
    return messages[::-1]
