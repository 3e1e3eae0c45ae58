r"""Diagnose a bridge: is comparing A and C embeddings directly justified?"""

import math
import numbers

import torch

from pyro_contrast.diagnostics._bank_checks import (
    candidate_term,
    check_bank,
    nonradial,
    posterior_summaries,
)
from pyro_contrast.diagnostics._result import check_count, check_probability, make_generator
from pyro_contrast.diagnostics.agreement import ranking_agreement
from pyro_contrast.diagnostics.report import Condition, DiagnosticReport
from pyro_contrast.marginals import chain

# Median effective bank size below which the exact answer rests on too few items.
_MIN_MEDIAN_ESS = 10.0


def diagnose(
    bridge,
    a,
    c,
    *,
    alpha=0.05,
    min_top1_agreement=0.9,
    tolerance=0.1,
    max_samples=2000,
    num_bootstrap=1000,
    generator=None,
):
    r"""Test the assumptions under which the direct shortcut equals the exact bridge.

    The direct shortcut scores candidates by the similarity of the A and C embeddings. It
    ranks them like the exact marginal over the bank when (:ref:`math-bridge`,
    :ref:`math-sphere-bridge`, :ref:`math-gaussian-bridge`):

    - **cosine** critics: the bank's representation is uniform on the sphere
      (:func:`sphere_uniformity`);
    - **dot / neg_sq_l2** critics: it is Gaussian (:func:`gaussianity`) and isotropic
      (:func:`isotropy`), and the candidate-only term of the Gaussian marginal —
      :math:`m \cdot v' + \tfrac12 v'^\top S v'` (dot, :math:`v' = v/T`) or
      :math:`-b \lVert v - m \rVert^2 / (2(1 + s\sigma^2))` (squared L2) — is constant over
      the candidates (``candidate_term_constancy``: its sd in nats ``<= tolerance``);
    - always: both critics see the bank in one space (``shared_representation``: mean
      cosine of the two views' rows ``>= 0.99``), and the B–C normalizer
      :math:`\log Z(b_m)` over the candidates (or ``target_bank``) is nearly constant over
      the bank items a query uses (``normalizer_constancy``: its standard deviation under
      :math:`p(b \mid a)`, averaged over queries, ``<= tolerance`` nats). The exact marginal
      is the LogSumExp form over a bank reweighted by :math:`1/Z(b_m)`, so a varying
      normalizer takes the closed forms out of play. For dot and squared-L2 critics only
      the part of :math:`\log Z` not explained by the radius :math:`\lVert z_b - c\rVert`
      counts (centre 0, resp. the bank mean): a radial reweighting keeps the rotational
      symmetry the shortcut needs, and against isotropic candidates :math:`Z` does grow
      with :math:`\lVert z_b \rVert`. The full spread, which is 0 exactly when the LogSumExp
      estimator equals the exact marginal, is ``report.log_normalizer_sd``.

    It then measures the outcome directly: the rankings of ``bridge.log_ratio(a, c,
    "direct")`` and ``"exact"`` per query (mean Kendall :math:`\tau`, top-1 agreement, with
    bootstrap intervals). **Decision rule**: ``shortcut_justified`` is ``True`` iff no test
    rejects at level ``alpha`` (each at ``alpha``; no multiplicity correction, so the rule
    errs towards caution), every condition holds, and top-1 agreement is at least
    ``min_top1_agreement``. The effective sample size of each query's bank posterior is
    reported; a median below 10 adds a warning (the exact answer itself is then noisy).

    Hypothesis tests use at most ``max_samples`` bank rows (a random subset), so they
    flag departures that matter at that sample size rather than negligible ones of a
    million-item bank; a test that cannot run (e.g. fewer rows than dimensions, or a
    singular covariance) is skipped with a warning. For chains with several banks every
    bank's representation is tested and the normalizer check uses the last bank,
    unweighted.

    References:

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*.
    2. Mardia & Jupp (2000), *Directional Statistics*, §10.4.

    :param Bridge bridge: the bridge to diagnose.
    :param a: queries (as passed to ``bridge.log_ratio``).
    :param c: candidates (as passed to ``bridge.log_ratio``).
    :param float alpha: level of each hypothesis test.
    :param float min_top1_agreement: required top-1 agreement of direct with exact.
    :param float tolerance: bound in nats for the constancy conditions.
    :param int max_samples: bank rows used by the hypothesis tests.
    :param int num_bootstrap: bootstrap replicates of the agreement intervals.
    :param generator: ``torch.Generator`` or int seed (subsampling and bootstrap).
    :returns: :class:`DiagnosticReport`.

    >>> import pyro_contrast as pc
    >>> critic = pc.Critic.from_embeddings("cosine", temperature=0.5)
    >>> bank = torch.nn.functional.normalize(torch.randn(500, 4), dim=-1)
    >>> bridge = pc.Bridge([critic, critic], [pc.Bank(bank)], target_bank=torch.randn(300, 4))
    >>> report = diagnose(bridge, torch.randn(20, 4), torch.randn(30, 4), generator=0)
    >>> isinstance(report.shortcut_justified, bool)
    True
    """
    check_probability(alpha, "alpha")
    if not (isinstance(min_top1_agreement, numbers.Real) and 0 <= min_top1_agreement <= 1):
        raise ValueError(f"min_top1_agreement must be in [0, 1], got {min_top1_agreement!r}")
    if not (isinstance(tolerance, numbers.Real) and math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number (nats), got {tolerance!r}")
    check_count(max_samples, "max_samples", minimum=10)
    check_count(num_bootstrap, "num_bootstrap")
    generator = make_generator(generator)
    hops = [tuple(h) if isinstance(h, (list, tuple)) else (h,) for h in bridge.critics]
    similarities = {critic.similarity for hop in hops for critic in hop}
    if len(similarities) != 1:
        raise ValueError(
            f"diagnose needs all critics to share one similarity (the direct shortcut is "
            f"undefined otherwise), got {sorted(similarities)}"
        )
    similarity = similarities.pop()
    tests, conditions, warnings = {}, {}, []

    with torch.no_grad():
        exact = bridge.log_ratio(a, c, "exact")
        direct = bridge.log_ratio(a, c, "direct")
        banks = [_embed(bridge, i) for i in range(len(bridge.banks))]
        if any(bank.log_weights is not None for bank in bridge.banks):
            warnings.append(
                "the bank has log_weights: the representation tests treat its items as "
                "unweighted draws"
            )
        for i, (z_left, z_right) in enumerate(banks):
            suffix = f"bank {i}" if len(banks) > 1 else ""
            check_bank(
                z_left,
                z_right,
                similarity,
                suffix,
                max_samples,
                generator,
                tests,
                conditions,
                warnings,
            )
        last = hops[-1][0]
        candidates = last.encode_y(c).to(torch.float64)
        targets = candidates
        if bridge.target_bank is not None:
            targets = last.encode_y(bridge.target_bank).to(torch.float64)
        z_right = banks[-1][1]
        log_z = chain.log_normalizer(last, z_right, targets).to(torch.float64)
        # columns: log Z itself (LSE = exact iff constant) and its non-radial part
        values = torch.stack([log_z, nonradial(log_z, z_right, similarity)], -1)
        ess = None
        if len(banks) == 1 and len(hops[0]) == 1:
            ess, spreads = posterior_summaries(
                hops[0][0], a, banks[0][0], bridge.banks[0].log_weights, values
            )
            spreads = spreads.mean(0)
            weighting = "under p(b|a), mean over queries"
        else:
            spreads = values.std(0) if values.shape[0] > 1 else values.new_zeros(2)
            weighting = "over the last bank (unweighted)"
            warnings.append(
                "chain with several banks or fused queries: bank-posterior ESS "
                "not computed and the normalizer spread is unweighted"
            )
        log_normalizer_sd, spread = float(spreads[0]), float(spreads[1])
        what = "log Z(b_m)" if similarity == "cosine" else "the non-radial part of log Z(b_m)"
        conditions["normalizer_constancy"] = Condition(
            "normalizer_constancy",
            spread,
            tolerance,
            spread <= tolerance,
            f"sd of {what} {weighting}, nats",
        )
        if similarity in ("dot", "neg_sq_l2"):
            term = candidate_term(similarity, hops[0][0], last, z_right, candidates)
            sd = float(term.std()) if term.numel() > 1 else 0.0
            conditions["candidate_term_constancy"] = Condition(
                "candidate_term_constancy",
                sd,
                tolerance,
                sd <= tolerance,
                "sd over candidates of the candidate-only term of the Gaussian marginal, nats",
            )
        elif similarity == "bilinear":
            warnings.append(
                "no representation assumption is known for bilinear critics: "
                "only the normalizer and the agreement are checked"
            )

    agreement = ranking_agreement(direct, exact, num_bootstrap=num_bootstrap, generator=generator)
    top1 = agreement.top1_agreement
    conditions["top1_agreement"] = Condition(
        "top1_agreement",
        top1,
        float(min_top1_agreement),
        top1 >= min_top1_agreement,
        "fraction of queries where direct and exact pick the same candidate",
        ">=",
    )
    if ess is not None and float(ess.ess.median()) < _MIN_MEDIAN_ESS:
        warnings.append(
            f"the bank posterior p(b|a) uses few items (median ESS "
            f"{float(ess.ess.median()):.1f}): the exact answer rests on a handful of bank "
            "items; enlarge the bank or raise the temperature"
        )
    failed = [name for name, test in tests.items() if test.rejects(alpha)]
    failed += [name for name, condition in conditions.items() if not condition.passed]
    return DiagnosticReport(
        shortcut_justified=not failed,
        failed_assumptions=failed,
        tests=tests,
        conditions=conditions,
        agreement=agreement,
        ess=ess,
        similarity=similarity,
        alpha=float(alpha),
        log_normalizer_sd=log_normalizer_sd,
        warnings=warnings,
    )


def _embed(bridge, index):
    z_left, z_right = bridge.embed_bank(index)
    return z_left.detach().to(torch.float64), z_right.detach().to(torch.float64)
