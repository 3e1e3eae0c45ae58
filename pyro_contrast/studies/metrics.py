r"""Per-query metrics of a score matrix over candidates.

Every function takes ``(N, K)`` float64 numpy arrays of log-ratio scores (one row per query,
one column per candidate) and returns one number per query, so that
:func:`pyro_contrast.studies.compare` can average them and bootstrap the average by reweighting
queries. Ties are resolved by their expectation under uniformly random tie-breaking, so a
method that gives all candidates the same score earns chance-level recall, not a perfect one.

**References**

1. B. Che, B. Eysenbach, "The 'Law' of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities", ICLR 2025.
"""

import numpy as np
from scipy.special import digamma, log_softmax
from scipy.stats import rankdata

_EULER_GAMMA = 0.5772156649015329


def grouped_candidates(matrix, size):
    """Stack the ``(size, size)`` diagonal blocks of an ``(N, N)`` score matrix into ``(N, size)``.

    Held-out triplets are scored in groups of ``size``: each query's candidates are the C items
    of its own group, the true partner at the query's own position. Scoring all N x N pairs
    once and keeping the blocks is one large contraction instead of N / size small ones.
    Works on numpy arrays and torch tensors; trailing rows beyond a whole group are dropped.

    >>> grouped_candidates(np.arange(16.0).reshape(4, 4), 2)
    array([[ 0.,  1.],
           [ 4.,  5.],
           [10., 11.],
           [14., 15.]])
    """
    groups = matrix.shape[0] // size
    blocks = matrix[: groups * size, : groups * size].reshape(groups, size, groups, size)
    index = np.arange(groups)
    return blocks[index, :, index, :].reshape(-1, size)


def _rank_counts(scores, positives):
    positive_score = np.take_along_axis(scores, positives[:, None], axis=1)
    greater = (scores > positive_score).sum(axis=1)
    ties = (scores == positive_score).sum(axis=1) - 1  # the positive itself is not a tie
    return greater, ties


def recall_at_k(scores, positives, k):
    r"""Probability that the true candidate is among the top ``k``, per query.

    With ``g`` candidates scored strictly higher than the positive and ``t`` ties, the
    positive's rank is uniform on ``g + 1 .. g + t + 1``, so

    .. math:: \text{recall@}k = \mathrm{clip}\left(\frac{k - g}{t + 1}, 0, 1\right).

    :param numpy.ndarray scores: ``(N, K)`` scores.
    :param numpy.ndarray positives: ``(N,)`` index of each query's true candidate.
    :param int k: cut-off, ``k >= 1``.
    :returns: ``(N,)`` values in ``[0, 1]``.

    >>> recall_at_k(np.array([[0.0, 2.0, 1.0]]), np.array([2]), 2)
    array([1.])
    """
    greater, ties = _rank_counts(scores, positives)
    return np.clip((k - greater) / (ties + 1.0), 0.0, 1.0)


def reciprocal_rank(scores, positives):
    r"""Expected reciprocal rank of the true candidate, per query.

    .. math:: \mathbb{E}[1/r] = \frac{H_{g+t+1} - H_g}{t + 1},\qquad
              H_n = \psi(n + 1) + \gamma.

    :param numpy.ndarray scores: ``(N, K)`` scores.
    :param numpy.ndarray positives: ``(N,)`` index of each query's true candidate.
    :returns: ``(N,)`` values in ``(0, 1]``.

    >>> reciprocal_rank(np.array([[0.0, 2.0, 1.0]]), np.array([2]))
    array([0.5])
    """
    greater, ties = _rank_counts(scores, positives)
    harmonic_high = digamma(greater + ties + 2.0) + _EULER_GAMMA
    harmonic_low = digamma(greater + 1.0) + _EULER_GAMMA
    return (harmonic_high - harmonic_low) / (ties + 1.0)


def _row_pearson(x, y):
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=1) / denominator, np.nan)


def spearman(reference, scores):
    """Spearman rank correlation between two score rows, per query.

    Ties get average ranks. A query where either row is constant has no defined correlation
    and gets NaN (averages skip it).

    :param numpy.ndarray reference: ``(N, K)`` reference scores.
    :param numpy.ndarray scores: ``(N, K)`` scores of the method.
    :returns: ``(N,)`` values in ``[-1, 1]`` or NaN.

    >>> spearman(np.array([[0.0, 1.0, 2.0]]), np.array([[0.0, 5.0, 9.0]]))
    array([1.])
    """
    return _row_pearson(rankdata(reference, axis=1), rankdata(scores, axis=1))


def kendall(reference, scores, *, chunk_size=None):
    r"""Kendall's :math:`\tau_b` between two score rows, per query.

    .. math:: \tau_b = \frac{\sum_{i<j} \mathrm{sgn}(x_i - x_j)\,\mathrm{sgn}(y_i - y_j)}
                            {\sqrt{(n_0 - n_x)(n_0 - n_y)}},

    with :math:`n_0 = K(K-1)/2` and :math:`n_x, n_y` the tied pairs. Up to
    ``_PAIRWISE_MAX_CANDIDATES`` candidates the signs of all pairs are formed directly (blocks
    of ``chunk_size`` queries); beyond that, Knight's :math:`O(K \log K)` algorithm counts the
    discordant pairs as inversions with a Fenwick tree run on all queries at once. Constant
    rows give NaN.

    :param numpy.ndarray reference: ``(N, K)`` reference scores.
    :param numpy.ndarray scores: ``(N, K)`` scores of the method.
    :param int chunk_size: queries per block of the pairwise path (default: about 4 million
        pair entries a block).
    :returns: ``(N,)`` values in ``[-1, 1]`` or NaN.

    **References**

    1. W. R. Knight, "A Computer Method for Calculating Kendall's Tau with Ungrouped Data",
       Journal of the American Statistical Association 61, 1966.

    >>> kendall(np.array([[0.0, 1.0, 2.0]]), np.array([[2.0, 1.0, 0.0]]))
    array([-1.])
    """
    num_queries, num_candidates = reference.shape
    if num_candidates > _PAIRWISE_MAX_CANDIDATES:
        return _kendall_knight(reference, scores)
    if chunk_size is None:
        chunk_size = max(1, 2**22 // max(1, num_candidates * num_candidates))
    out = np.empty(num_queries)
    for start in range(0, num_queries, chunk_size):
        x = reference[start : start + chunk_size]
        y = scores[start : start + chunk_size]
        sign_x = np.sign(x[:, :, None] - x[:, None, :])
        sign_y = np.sign(y[:, :, None] - y[:, None, :])
        # each unordered pair appears twice in the full K x K matrices
        concordance = (sign_x * sign_y).sum(axis=(1, 2)) / 2
        untied_x = np.abs(sign_x).sum(axis=(1, 2)) / 2
        untied_y = np.abs(sign_y).sum(axis=(1, 2)) / 2
        out[start : start + chunk_size] = _ratio(concordance, untied_x * untied_y)
    return out


_PAIRWISE_MAX_CANDIDATES = 24  # the O(K^2) path is faster below this (measured)


def _ratio(numerator, squared_denominator):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(squared_denominator > 0, numerator / np.sqrt(squared_denominator), np.nan)


def _tied_pairs(boundaries):
    """Pairs tied within runs of a sorted row; ``boundaries`` marks where a new run starts."""
    num_rows, length = boundaries.shape
    run = np.cumsum(boundaries, axis=1) - 1 + (np.arange(num_rows) * length)[:, None]
    sizes = np.bincount(run.ravel(), minlength=num_rows * length).reshape(num_rows, length)
    return (sizes * (sizes - 1) // 2).sum(axis=1)


def _kendall_knight(x, y):
    num_rows, length = x.shape
    order = np.lexsort((y, x), axis=-1)  # by x, ties by y: x-ties add no inversions
    x = np.take_along_axis(x, order, axis=1)
    y = np.take_along_axis(y, order, axis=1)
    first = np.ones((num_rows, 1), dtype=bool)
    new_x = np.concatenate([first, x[:, 1:] != x[:, :-1]], axis=1)
    new_joint = np.concatenate([first, new_x[:, 1:] | (y[:, 1:] != y[:, :-1])], axis=1)
    sorted_y = np.sort(y, axis=1)
    new_y = np.concatenate([first, sorted_y[:, 1:] != sorted_y[:, :-1]], axis=1)
    total = length * (length - 1) // 2
    tied_x, tied_y = _tied_pairs(new_x), _tied_pairs(new_y)
    tied_both = _tied_pairs(new_joint)
    ranks = rankdata(y, method="dense", axis=1).astype(np.int64)  # 1..K
    discordant = _count_inversions(ranks)
    concordance = total - tied_x - tied_y + tied_both - 2 * discordant
    return _ratio(
        concordance.astype(np.float64), (total - tied_x).astype(np.float64) * (total - tied_y)
    )


def _count_inversions(ranks):
    """Per row, pairs ``i < j`` with ``ranks[i] > ranks[j]`` (Fenwick tree, rows in parallel)."""
    num_rows, length = ranks.shape
    sink = length + 1  # updates past the last node land here and are never read
    steps = int(length).bit_length() + 1
    # the nodes a prefix query reads and an update writes, for every rank 1..K (padded with
    # node 0, which stays zero, and with the sink)
    read = np.zeros((length + 1, steps), dtype=np.int64)
    write = np.full((length + 1, steps), sink, dtype=np.int64)
    for rank in range(1, length + 1):
        node, step = rank, 0
        while node > 0:
            read[rank, step], node, step = node, node - (node & -node), step + 1
        node, step = rank, 0
        while node <= length:
            write[rank, step], node, step = node, node + (node & -node), step + 1
    tree = np.zeros((num_rows, length + 2), dtype=np.int64)
    rows = np.arange(num_rows)[:, None]
    inversions = np.zeros(num_rows, dtype=np.int64)
    for j in range(length):
        rank = ranks[:, j]
        inversions += j - tree[rows, read[rank]].sum(axis=1)
        tree[rows, write[rank]] += 1  # nodes on one path are distinct (the sink aside)
    return inversions


def kl_divergence(reference, scores):
    r"""KL divergence between the candidate conditionals of two score rows, per query.

    .. math:: \mathrm{KL}(p \,\|\, q) = \sum_k p_k (\log p_k - \log q_k),\qquad
              p = \mathrm{softmax}_k(\text{reference}),\ q = \mathrm{softmax}_k(\text{scores}).

    :param numpy.ndarray reference: ``(N, K)`` reference scores (``p``).
    :param numpy.ndarray scores: ``(N, K)`` scores of the method (``q``).
    :returns: ``(N,)`` non-negative values in nats.

    >>> kl_divergence(np.zeros((1, 2)), np.zeros((1, 2)))
    array([0.])
    """
    log_p = log_softmax(reference, axis=1)
    log_q = log_softmax(scores, axis=1)
    # p_k = 0 (underflow) contributes 0 whatever log q_k is
    terms = np.where(log_p > -np.inf, np.exp(log_p) * (log_p - log_q), 0.0)
    return np.maximum(terms.sum(axis=1), 0.0)


def jensen_shannon(reference, scores):
    r"""Jensen–Shannon divergence between the candidate conditionals, per query.

    .. math:: \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q
              \,\|\, m),\qquad m = \tfrac12 (p + q),

    bounded by :math:`\log 2`; :math:`\log m` is formed in log space.

    :param numpy.ndarray reference: ``(N, K)`` reference scores.
    :param numpy.ndarray scores: ``(N, K)`` scores of the method.
    :returns: ``(N,)`` values in ``[0, log 2]`` nats.

    >>> jensen_shannon(np.array([[0.0, -800.0]]), np.array([[-800.0, 0.0]])).round(6)
    array([0.693147])
    """
    log_p = log_softmax(reference, axis=1)
    log_q = log_softmax(scores, axis=1)
    log_m = np.logaddexp(log_p, log_q) - np.log(2.0)
    p_terms = np.where(log_p > -np.inf, np.exp(log_p) * (log_p - log_m), 0.0)
    q_terms = np.where(log_q > -np.inf, np.exp(log_q) * (log_q - log_m), 0.0)
    return np.clip(0.5 * (p_terms.sum(axis=1) + q_terms.sum(axis=1)), 0.0, np.log(2.0))


def top1_agreement(reference, scores):
    """Whether two score rows pick the same best candidate, per query (0 or 1).

    :param numpy.ndarray reference: ``(N, K)`` reference scores.
    :param numpy.ndarray scores: ``(N, K)`` scores of the method.
    :returns: ``(N,)`` float array of zeros and ones.

    >>> top1_agreement(np.array([[0.0, 1.0]]), np.array([[3.0, 2.0]]))
    array([0.])
    """
    return (reference.argmax(axis=1) == scores.argmax(axis=1)).astype(np.float64)


def calibration_moments(reference, scores, *, center=False):
    """Per-query sufficient statistics of the affine fit ``reference ~ scores``.

    Returns the sums over candidates of ``x, y, x*x, x*y, y*y`` with ``x`` the method's
    scores and ``y`` the reference, so that any reweighting of queries (a bootstrap replicate)
    gives the fit by summing rows first; see :func:`calibration_from_moments`.

    :param numpy.ndarray reference: ``(N, K)`` reference scores (``y``).
    :param numpy.ndarray scores: ``(N, K)`` scores of the method (``x``).
    :param bool center: subtract each query's mean over candidates from both rows first, so
        that only within-query contrasts are fitted (critics are defined up to a term in the
        query alone).
    :returns: ``(N, 5)`` array.

    >>> calibration_moments(np.array([[1.0, 3.0]]), np.array([[0.0, 1.0]]))
    array([[ 1.,  4.,  1.,  3., 10.]])
    """
    x, y = scores, reference
    if center:
        x = x - x.mean(axis=1, keepdims=True)
        y = y - y.mean(axis=1, keepdims=True)
    return np.stack([x.sum(1), y.sum(1), (x * x).sum(1), (x * y).sum(1), (y * y).sum(1)], 1)


def calibration_from_moments(moments, count):
    r"""Slope, intercept and :math:`R^2` of the least-squares fit ``y ≈ intercept + slope x``.

    A calibrated method has slope 1 and intercept 0: ``slope`` is the factor that would
    rescale (re-temper) its scores onto the reference.

    :param numpy.ndarray moments: ``(..., 5)`` summed moments from
        :func:`calibration_moments`.
    :param count: number of (query, candidate) entries summed, broadcastable to ``(...)``.
    :returns: ``(slope, intercept, r2)``, each of shape ``(...)``; NaN where ``x`` is constant.

    >>> [float(v) for v in calibration_from_moments(np.array([1.0, 4.0, 1.0, 3.0, 10.0]), 2.0)]
    [2.0, 1.0, 1.0]
    """
    sx, sy, sxx, sxy, syy = np.moveaxis(moments, -1, 0)
    mean_x, mean_y = sx / count, sy / count
    var_x = sxx / count - mean_x**2
    var_y = syy / count - mean_y**2
    cov = sxy / count - mean_x * mean_y
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(var_x > 0, cov / var_x, np.nan)
        r2 = np.where((var_x > 0) & (var_y > 0), cov**2 / (var_x * var_y), np.nan)
    intercept = mean_y - slope * mean_x
    return slope, intercept, np.minimum(r2, 1.0)
