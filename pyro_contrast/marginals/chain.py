r"""Exact and LogSumExp marginalization of a chain of critics over banks.

Every hop is a log-space matrix product :math:`\mathrm{out}_{nk} = \log \sum_m
\exp(L_{nm} + R_{mk})` computed by :func:`pyro_contrast.ops.logmatmul`, so no
:math:`N \times K \times M` tensor is ever formed. These functions work on critics and
already-encoded embeddings; :class:`pyro_contrast.Bridge` is the public front end.

References:

1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities* (Lemma 1; the LogSumExp estimator).
"""

import functools
import math

import torch

from pyro_contrast._validation import check_finite
from pyro_contrast.critics import Critic
from pyro_contrast.marginals._memo import needs_graph
from pyro_contrast.ops import LogMatMulStream, logmatmul
from pyro_contrast.ops.streaming import scratch

# Elements of one (rows x targets) score block when a bank chunk meets the C normalizer set;
# bounds memory at 2**24 floats (64 MB) per block however large the target set is.
_MAX_BLOCK = 2**24
# Scores per block of the fused pass (:func:`fused_partials`): a (block x N) and a
# (block x K) block of scores stay in cache from their GEMM to the contraction.
_FUSED_ELEMENTS = 2**20
_MIN_FUSED_BLOCK = 256
_LOG2E = 1.0 / math.log(2.0)


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
    partials, _ = chunk_partials(
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
    return partials


def chunk_partials(bank_left, bank_right, log_weights, *, fused=True, bank_factors=None, **kwargs):
    """``(partials, fused)``: :func:`fused_partials` where it runs (and ``fused``), else
    :func:`encoded_partials`; the flag says whether the streamed pass was taken."""
    args = (bank_left, bank_right, log_weights)
    if fused:
        partials = fused_partials(*args, bank_factors=bank_factors, **kwargs)
        if partials is not None:
            return partials, True
    return encoded_partials(*args, **kwargs), False


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


def long_chain_log_ratio(hops, queries, encoded_banks, candidates, targets, method):
    r"""The log ratio through two or more banks (N, K): the forward messages to the last
    bank, then its hop to the candidates. ``method="exact"`` normalizes every hop (the C
    normalizer over ``targets``, or the candidates); ``"lse"`` sums raw path scores and
    divides by the banks' total weights."""
    exact = method == "exact"
    alpha = forward_messages(hops, queries, encoded_banks, normalized=exact)[-1]
    last = hops[-1][0]
    right = encoded_banks[-1][1]
    scores = last.pairwise_embeddings(right, candidates)
    if exact:
        norm = candidates if targets is None else targets
        return logmatmul(alpha, scores - log_normalizer(last, right, norm).unsqueeze(-1))
    log_total = 0.0
    for left_views, _, weights in encoded_banks:
        count = left_views[0].shape[0]
        log_total += math.log(count) if weights is None else torch.logsumexp(weights, 0).item()
    return logmatmul(alpha, scores) - log_total


def _without_gradients(fused):
    """``fused`` under ``no_grad``, or None where it does not apply: other critics, tracing,
    or a gradient that may be needed (then the caller's two-pass path keeps the graph).
    ``no_grad`` also keeps the in-place work on reused buffers out of any graph, should a
    dependency escape the check."""

    @functools.wraps(fused)
    def run(bank_left, bank_right, log_weights, **kwargs):
        left, right = kwargs["left"], kwargs["right"]
        if not fusable(left, right) or torch.jit.is_tracing():
            return None
        inputs = (
            *kwargs["queries"],
            *bank_left,
            bank_right,
            kwargs["candidates"],
            kwargs.get("targets"),
            kwargs.get("log_z"),
            log_weights,
            *(p for critic in (*left, right) for p in critic.parameters()),
        )
        if needs_graph(*inputs):
            return None
        with torch.no_grad():
            return fused(bank_left, bank_right, log_weights, **kwargs)

    return run


@_without_gradients
def fused_partials(
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
    bank_factors=None,
):
    r""":func:`encoded_partials` in one streamed pass over the chunk, or None.

    The chunk is scored block by block into reused buffers (a (block x N) block of
    :math:`F` and a (block x K) block of :math:`G`, each one GEMM of the critics'
    :meth:`~pyro_contrast.Critic.gemm_factor`), and each block goes through its
    normalizer, its shifts and its exponentials while in cache, straight into a
    :class:`~pyro_contrast.ops.LogMatMulStream`. With the candidates as the C normalizer
    set, :math:`Z(b_m)` comes from the block's own exponentials by one matrix-vector
    product, :math:`\sum_k e^{G_{mk} - \beta_k} e^{\beta_k - \max \beta}`, certified
    against underflow row by row (a row it cannot certify is recomputed by
    ``logsumexp``). No score matrix of the chunk is formed.

    ``bank_factors``, if given, are :func:`bank_factors` of this chunk (a caller may keep
    them between calls: they do not depend on the queries or candidates).

    Returns None, and the caller takes :func:`encoded_partials`, where this pass does not
    apply (several left critics, critics of other classes, gradients needed, tracing) or
    where the first block predicts that most cells would fail the fast path's certificate
    (spread-out squared-L2 scores): ``logmatmul``'s exact tiers then do the work. Cells that
    fail the certificate at the end are recomputed by ``logmatmul`` on their rows and
    columns. A score that overflows to ``+inf`` makes its cells fail the certificate, and
    their recomputation raises the scores' usual error; one that overflows to ``-inf`` is a
    term of relative weight below ``exp(-1e38)``, which the sum drops as it should.
    """
    exact = method == "exact"
    if exact and log_z is None and targets is not None:
        log_z = log_normalizer(right, bank_right, targets)
    query, bank_left = queries[0], bank_left[0]
    dtype = score_dtype(query, bank_left)
    if score_dtype(bank_right, candidates) != dtype:
        return None
    if bank_factors is not None and bank_factors[0].dtype != dtype:
        bank_factors = None
    num_rows, num_items, num_cols = query.shape[0], bank_left.shape[0], candidates.shape[0]
    if num_items == 0 or num_rows == 0 or num_cols == 0 or bank_right.shape[0] != num_items:
        return None
    device = query.device
    # the critics' own checks of the embeddings (dims, bilinear shapes), on one pair each
    left[0].check_pairwise(query, bank_left)
    right.check_pairwise(bank_right, candidates)
    normalize = exact and log_z is None
    # Scores in bits (log2 e folded into the small query and candidate factors) where the
    # critics' last step is linear: the exponentials are then plain exp2, one pass fewer.
    bits = _linear(left[0]) and _linear(right)
    unit = _LOG2E if bits else 1.0
    if bits:
        log_weights = None if log_weights is None else log_weights * unit
        log_z = None if log_z is None else log_z * unit
    stream = LogMatMulStream(num_items, dtype=dtype, device=device, bits=bits)
    totals = (
        LogMatMulStream(num_items, dtype=dtype, device=device, bits=bits)
        if exact and not normalize
        else None
    )
    all_log_z = torch.empty(num_items, 1, dtype=dtype, device=device) if normalize else None
    block = max(_MIN_FUSED_BLOCK, min(_FUSED_ELEMENTS // max(num_rows, num_cols), num_items))
    left_buffer = scratch("bridge-left", (block, num_rows), dtype, device)
    right_buffer = scratch("bridge-right", (block, num_cols), dtype, device)
    # The temperatures (and log2 e) go into the small query and candidate factors; the bank's
    # factors come from the caller's cache or are made block by block, in cache.
    q = left[0].gemm_factor(check_finite(query, "queries"), "x", temperature=True, dtype=dtype)
    c = right.gemm_factor(
        check_finite(candidates, "candidates"), "y", temperature=True, dtype=dtype
    )
    if bits:
        q, c = q * unit, c * unit
    # a small first block probes the certificate (see _hopeless) before most of the work
    probe = max(_MIN_FUSED_BLOCK, block // 8)
    starts = [0, *range(min(probe, num_items), num_items, block)]
    for lo, hi in zip(starts, [*starts[1:], num_items], strict=True):
        if bank_factors is None:
            b_left = left[0].gemm_factor(bank_left[lo:hi], "y", dtype=dtype)
            b_right = right.gemm_factor(bank_right[lo:hi], "x", dtype=dtype)
        else:
            b_left, b_right = bank_factors[0][lo:hi], bank_factors[1][lo:hi]
        # F^T (block x N): the bank block times the queries' factor, one GEMM
        f = left[0].finish_scores_(torch.mm(b_left, q.T, out=left_buffer[: hi - lo]))
        if log_weights is not None:
            f = f.add_(log_weights[lo:hi].to(dtype).unsqueeze(-1))
        g = right.finish_scores_(torch.mm(b_right, c.T, out=right_buffer[: hi - lo]))
        col_shift = stream.shift_cols(g.amax(0, keepdim=True))
        if normalize:
            row_log_z = _row_normalizer(
                stream, g, col_shift, right, bank_right[lo:hi], candidates, unit
            )
            all_log_z[lo:hi] = row_log_z
            f = f.sub_(row_log_z)
        elif log_z is not None:
            row_log_z = log_z[lo:hi].to(dtype).unsqueeze(-1)
            f = f.sub_(row_log_z)
        ey = g if normalize else stream.exp_(g, col_shift)
        row_shift = stream.shift_rows(f.amax(0, keepdim=True).T)
        ex = stream.exp_(f, row_shift.T).T
        stream.add(ex, ey)
        if totals is not None:
            # sum_m e^{F_nm}: the same exponentials against e^{log Z(b_m)} (the same row
            # shifts: they are the running maxima already)
            totals.shift_rows(row_shift)
            top = totals.shift_cols(row_log_z.amax(0, keepdim=True))
            totals.add(ex, totals.exp_(row_log_z.clone(), top))
        if lo == 0 and hi < num_items and _hopeless(stream):
            return None
    values, certified = stream.result()
    numerator = values.to(dtype)
    if not bool(certified.all()):
        # Cells whose terms lie too far below their shifts: logmatmul's exact tiers, on the
        # rows and columns holding them, from freshly computed scores.
        shift = all_log_z if normalize else log_z
        if shift is not None:
            shift = shift.to(dtype).reshape(-1, 1) / unit
        _repair(
            numerator,
            ~certified,
            left[0],
            right,
            query,
            bank_left,
            bank_right,
            candidates,
            None if log_weights is None else log_weights / unit,
            shift,
        )
    if normalize:
        # As in encoded_partials: log K (the normalizer's mean) is added to the small result.
        return numerator + math.log(num_cols), torch.logsumexp(numerator, -1)
    if exact:
        total, total_certified = totals.result()
        total = total.squeeze(-1).to(dtype)
        bad = ~total_certified.squeeze(-1)
        if bool(bad.any()):
            weights = None if log_weights is None else log_weights / unit
            scores = left_scores(left, [query[bad]], [bank_left], weights)
            total[bad] = torch.logsumexp(scores, -1)
        return numerator, total
    if log_weights is None:
        count = torch.tensor(float(num_items), dtype=dtype)
        return numerator, count.log().expand(num_rows)
    weights = torch.logsumexp(log_weights.to(dtype) / unit, -1)
    return numerator, weights.expand(num_rows)


def fusable(left, right):
    """Whether :func:`fused_partials` can run these critics (one left critic of the library's
    own scoring, and the right one)."""
    return len(left) == 1 and _plain(left[0]) and _plain(right)


def bank_factors(left, right, bank_left, bank_right, dtype):
    """The bank's GEMM factors for :func:`fused_partials`: ``(left's y side, right's x side)``."""
    return (
        left[0].gemm_factor(bank_left[0], "y", dtype=dtype),
        right.gemm_factor(bank_right, "x", dtype=dtype),
    )


def _hopeless(stream):
    """After the first block: whether so many cells fail the certificate that the fused pass
    would end in a repair of most of the matrix (spread-out squared-L2 scores). Only cells
    whose row and column have seen a finite term count (a first block of zero-weight items
    says nothing). Only speed depends on this guess, never accuracy."""
    rows, cols = stream.live()
    live = rows & cols
    count = int(live.sum())
    return count > 0 and int((~stream.certified() & live).sum()) > 0.05 * count


def _repair(out, bad, left, right, query, bank_left, bank_right, candidates, log_weights, shift):
    """Recompute ``out[bad]`` with :func:`logmatmul` on the rows and columns holding them."""
    rows = bad.any(-1).nonzero().squeeze(-1)
    cols = bad.any(-2).nonzero().squeeze(-1)
    x = left_scores([left], [query[rows]], [bank_left], log_weights)
    if shift is not None:
        x = x - shift.T
    y = right.pairwise_embeddings(bank_right, candidates[cols])
    block = logmatmul(x, y).to(out.dtype)
    sub = bad[rows.unsqueeze(-1), cols]
    current = out[rows.unsqueeze(-1), cols]
    out[rows.unsqueeze(-1), cols] = torch.where(sub, block, current)


def _plain(critic):
    """A :class:`Critic` whose pairwise scoring is the library's own (GEMM form)."""
    kind = type(critic)
    return isinstance(critic, Critic) and all(
        getattr(kind, name) is getattr(Critic, name)
        for name in (
            "pairwise_embeddings",
            "_pairwise",
            "_gemm_factors",
            "_side",
            "gemm_factor",
            "finish_scores_",
            "_finish_block",
        )
    )


def score_dtype(*tensors):
    """The dtype critics score these embeddings in (their promotion, float32 or better)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _row_normalizer(stream, g, col_shift, critic, bank_block, candidates, unit):
    r"""``log sum_k exp(g_mk)`` per row, (block x 1); exponentiates ``g`` in place.

    ``g`` becomes :math:`e^{g - \beta + h}` (the stream's factor for this block) and the
    rows' sums are one matrix-vector product with :math:`e^{\beta - \max \beta}`. What
    underflow loses is below ``3 K tiny``, so a row whose sum clears ``8 K tiny / eps``
    is exact to rounding; the others are recomputed from their scores. In the stream's
    units (``unit`` per nat: ``log2 e`` in bits).
    """
    top = col_shift.amax()
    ey = stream.exp_(g, col_shift)
    weights = (col_shift - top).exp2_() if stream.bits else (col_shift - top).exp_()
    sums = ey @ weights.T
    info = torch.finfo(g.dtype)
    log_z = (sums.log2() if stream.bits else sums.log()).sub_(stream.headroom).add_(top)
    bad = ~(sums.squeeze(-1) >= 8 * g.shape[-1] * info.tiny / info.eps)
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(-1)
        scores = critic.pairwise_embeddings(bank_block[rows], candidates)
        log_z[rows] = torch.logsumexp(scores.to(g.dtype), -1, keepdim=True) * unit
    return log_z


def _linear(critic):
    """Whether the critic's scores are its GEMM, up to a clamp at 0 (scale-invariant)."""
    return critic.bias is None and critic.similarity in ("dot", "cosine", "bilinear", "neg_sq_l2")
