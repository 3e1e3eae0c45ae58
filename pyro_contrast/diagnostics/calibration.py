r"""Is a critic's softmax over candidates calibrated? (binned reliability, bootstrap test)"""

from dataclasses import dataclass

import torch

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.diagnostics._result import DiagnosticResult, check_count, make_generator

BINNINGS = ("uniform", "quantile")

# Elements of one (replicates x queries) block of the consistency bootstrap.
_MAX_BLOCK = 2**22


@dataclass(frozen=True, repr=False)
class CalibrationBins:
    """Per-bin numbers of a reliability diagram (empty bins hold NaN confidence/accuracy).

    :param Tensor edges: ``(num_bins + 1,)`` bin edges on the confidence axis.
    :param Tensor confidence: ``(num_bins,)`` mean predicted probability of the top choice.
    :param Tensor accuracy: ``(num_bins,)`` frequency with which the top choice was right.
    :param Tensor count: ``(num_bins,)`` queries per bin.

    >>> logits = torch.randn(50, 3)
    >>> truth = logits.argmax(-1)
    >>> calibration(logits, truth, num_bins=5, generator=0).bins.edges.shape
    torch.Size([6])
    """

    edges: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor

    def __repr__(self):
        rows = [
            f"  ({lo:.3f}, {hi:.3f}]  n={int(k):5d}  confidence={conf:.3f}  accuracy={acc:.3f}"
            for lo, hi, k, conf, acc in zip(
                self.edges[:-1].tolist(),
                self.edges[1:].tolist(),
                self.count.tolist(),
                self.confidence.tolist(),
                self.accuracy.tolist(),
                strict=True,
            )
            if k > 0
        ]
        return "CalibrationBins(\n" + "\n".join(rows) + "\n)"


@dataclass(frozen=True, kw_only=True, repr=False)
class CalibrationResult(DiagnosticResult):
    """A :class:`DiagnosticResult` whose ``statistic`` is the expected calibration error,
    with the reliability-diagram ``bins``.

    >>> logits = 3 * torch.randn(400, 4)
    >>> overconfident = calibration(logits, torch.zeros(400, dtype=torch.long), generator=0)
    >>> overconfident.rejects(0.05)
    True
    """

    bins: CalibrationBins

    def __repr__(self):
        filled = int((self.bins.count > 0).sum())
        return super().__repr__() + f"\n  bins: {len(self.bins.count)} ({filled} non-empty)"


def calibration(
    scores, positives, *, num_bins=10, binning="uniform", num_bootstrap=1000, generator=None
):
    r"""Reliability of a critic's candidate distribution against held-out outcomes.

    Each row of ``scores`` is read as logits over a candidate set (or bank), giving
    :math:`p_n = \mathrm{softmax}(s_n)`; ``positives[n]`` is the candidate that actually
    went with query :math:`n` (held out from training). The top-label reliability compares
    the confidence :math:`\hat p_n = \max_k p_{nk}` with whether the top choice was right,
    in bins :math:`B_j` of confidence; the expected calibration error is

    .. math::

        \mathrm{ECE} = \sum_j \frac{|B_j|}{N}
        \left| \mathrm{acc}(B_j) - \mathrm{conf}(B_j) \right|.

    ECE is positive even for a calibrated model (binomial noise), so its p-value comes from
    the consistency bootstrap: under the model's own probabilities the top choice is right
    with probability :math:`\hat p_n`, independently across queries; ``num_bootstrap`` such
    outcome sets give the null distribution of ECE with the same bins, and
    :math:`p = (1 + \#\{\mathrm{ECE}^* \ge \mathrm{ECE}\}) / (1 + B)`. A small p-value says
    the critic is over- or under-confident (e.g. a wrong temperature).

    References:

    1. Guo, Pleiss, Sun & Weinberger (2017), *On Calibration of Modern Neural Networks*,
       ICML (expected calibration error, reliability diagrams).
    2. Bröcker & Smith (2007), *Increasing the reliability of reliability diagrams*, Weather
       and Forecasting 22 (consistency resampling).

    :param Tensor scores: ``(N, K)`` logits of ``K >= 2`` candidates per query.
    :param Tensor positives: ``(N,)`` integer index of the true candidate of each query.
    :param int num_bins: number of confidence bins.
    :param str binning: ``"uniform"`` (equal width on [0, 1]) or ``"quantile"`` (equal
        counts).
    :param int num_bootstrap: consistency-bootstrap replicates for the p-value.
    :param generator: ``torch.Generator`` or int seed of the bootstrap.
    :returns: :class:`CalibrationResult` (``statistic`` = ECE, ``p_value``, ``bins``).

    >>> logits = torch.randn(500, 4)
    >>> truth = torch.distributions.Categorical(logits=logits).sample()
    >>> result = calibration(logits, truth, generator=0)
    >>> result.bins.count.sum().item()
    500
    """
    scores = check_finite(as_float_tensor(scores, "scores"), "scores").detach()
    if scores.dim() != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        raise ValueError(
            f"scores must have shape (N, K) with N >= 1 and K >= 2, got {tuple(scores.shape)}"
        )
    positives = _check_positives(positives, scores.shape)
    num_bins = check_count(num_bins, "num_bins")
    num_bootstrap = check_count(num_bootstrap, "num_bootstrap")
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
    generator = make_generator(generator)

    probs = scores.to(torch.float64).softmax(-1)
    confidence, choice = probs.max(-1)
    correct = (choice == positives).to(torch.float64)
    edges = _edges(confidence, num_bins, binning)
    index = torch.bucketize(confidence, edges[1:-1])
    membership = torch.nn.functional.one_hot(index, num_bins).to(torch.float64)
    count = membership.sum(0)
    conf_sum = confidence @ membership
    num_queries = scores.shape[0]
    ece = float((correct @ membership - conf_sum).abs().sum()) / num_queries

    exceed = 0
    block = max(1, _MAX_BLOCK // num_queries)
    for start in range(0, num_bootstrap, block):
        size = min(block, num_bootstrap - start)
        uniform = torch.rand(size, num_queries, generator=generator, dtype=torch.float64)
        simulated = (uniform < confidence).to(torch.float64)
        replicate = (simulated @ membership - conf_sum).abs().sum(-1) / num_queries
        exceed += int((replicate >= ece).sum())
    p_value = (1 + exceed) / (1 + num_bootstrap)

    with torch.no_grad():
        nonempty = count > 0
        nan = torch.full_like(count, float("nan"))
        bins = CalibrationBins(
            edges=edges,
            confidence=torch.where(nonempty, conf_sum / count.clamp(min=1), nan),
            accuracy=torch.where(nonempty, (correct @ membership) / count.clamp(min=1), nan),
            count=count.to(torch.int64),
        )
    return CalibrationResult(
        name="calibration",
        statistic=ece,
        p_value=p_value,
        bins=bins,
        details={
            "mean_confidence": float(confidence.mean()),
            "accuracy": float(correct.mean()),
            "num_bootstrap": num_bootstrap,
        },
    )


def _check_positives(positives, shape):
    if not isinstance(positives, torch.Tensor):
        try:
            positives = torch.as_tensor(positives)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"positives must be an integer tensor or array: {error}") from None
    if positives.dtype == torch.bool or positives.is_floating_point() or positives.is_complex():
        raise TypeError(f"positives must hold integer indices, got dtype {positives.dtype}")
    if positives.shape != (shape[0],):
        raise ValueError(
            f"positives must have shape ({shape[0]},) to match scores, got {tuple(positives.shape)}"
        )
    if bool((positives < 0).any()) or bool((positives >= shape[1]).any()):
        raise ValueError(f"positives must be indices in [0, {shape[1]}), got out-of-range values")
    return positives.to(torch.int64)


def _edges(confidence, num_bins, binning):
    if binning == "uniform":
        return torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    levels = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    edges = torch.quantile(confidence, levels)
    edges[0], edges[-1] = 0.0, 1.0
    # repeated quantiles (many equal confidences) would give empty bins: keep them ordered
    return torch.cummax(edges, 0).values
