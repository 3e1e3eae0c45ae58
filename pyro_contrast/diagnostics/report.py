r"""The report of :func:`~pyro_contrast.diagnostics.diagnose`: is the direct shortcut justified?"""

from dataclasses import dataclass, field

from pyro_contrast.diagnostics.agreement import RankingAgreement
from pyro_contrast.diagnostics.weights import EffectiveSampleSize

# What a rejected test means for the shortcut, by test kind (the key's first word).
_MEANINGS = {
    "sphere_uniformity": "bank representations are not uniform on the sphere (see the "
    "mathematics page, §3)",
    "gaussianity": "bank representations are not Gaussian (see the mathematics page, §5)",
    "isotropy": "bank covariance is not a multiple of the identity (see the mathematics page, §5)",
    "normalizer_constancy": "the B-C normalizer log Z(b_m) varies over the bank, so "
    "LogSumExp-type scores differ from the exact marginal (see the mathematics page, §2)",
    "candidate_term_constancy": "the candidate-only term of the Gaussian marginal varies "
    "over candidates, so the direct score misranks them (see the mathematics page, §5)",
    "shared_representation": "the two critics see the bank in different spaces, so A and C "
    "embeddings are not directly comparable",
    "top1_agreement": "the direct ranking picks a different best candidate than the exact "
    "marginal too often",
}


@dataclass(frozen=True)
class Condition:
    """A checked inequality ``value <= threshold`` (or ``>=``), with what it measures.

    :param str name: identifier (also used in ``failed_assumptions``).
    :param float value: measured value.
    :param float threshold: the bound it is held to.
    :param bool passed: whether it holds.
    :param str description: what ``value`` is, with units.
    :param str direction: ``"<="`` or ``">="``.

    >>> print(Condition("spread", 0.05, 0.1, True, "sd in nats"))
    [ ok ] spread: 0.05 <= 0.1  (sd in nats)
    """

    name: str
    value: float
    threshold: float
    passed: bool
    description: str
    direction: str = "<="

    def __str__(self):
        mark = " ok " if self.passed else "FAIL"
        return (
            f"[{mark}] {self.name}: {self.value:.4g} {self.direction} {self.threshold:.4g}"
            f"  ({self.description})"
        )


@dataclass(repr=False)
class DiagnosticReport:
    r"""Whether comparing A and C embeddings directly is justified for a bridge.

    ``shortcut_justified`` is ``True`` when no assumption test rejects at ``alpha``, every
    condition holds and the direct ranking agrees with the exact one on at least
    ``min_top1_agreement`` of the queries; ``failed_assumptions`` lists what did not.

    :param bool shortcut_justified: the decision.
    :param list failed_assumptions: names of rejected tests and failed conditions.
    :param dict tests: hypothesis tests on the bank representations, by name.
    :param dict conditions: checked inequalities (normalizer constancy, agreement, ...).
    :param RankingAgreement agreement: direct vs exact ranking over the given queries.
    :param EffectiveSampleSize ess: effective number of bank items per query.
    :param str similarity: the critics' similarity.
    :param float alpha: level of every test.
    :param float log_normalizer_sd: sd of the B–C normalizer :math:`\log Z(b_m)` under the
        bank posterior (nats); the LogSumExp estimator equals the exact marginal when it is 0.
    :param list warnings: caveats (e.g. a degenerate bank posterior).

    >>> import pyro_contrast as pc, torch
    >>> critic = pc.Critic.from_embeddings("cosine", temperature=0.5)
    >>> bank, targets = pc.Bank(torch.randn(300, 3)), torch.randn(300, 3)
    >>> bridge = pc.Bridge([critic, critic], [bank], target_bank=targets)
    >>> from pyro_contrast.diagnostics import diagnose
    >>> report = diagnose(bridge, torch.randn(10, 3), torch.randn(6, 3), generator=0)
    >>> sorted(report.conditions)
    ['normalizer_constancy', 'top1_agreement']
    """

    shortcut_justified: bool
    failed_assumptions: list
    tests: dict
    conditions: dict
    agreement: RankingAgreement
    ess: EffectiveSampleSize | None
    similarity: str
    alpha: float
    log_normalizer_sd: float = float("nan")
    warnings: list = field(default_factory=list)

    def summary(self):
        """A human-readable account: the verdict, each test and condition, agreement, ESS."""
        verdict = "JUSTIFIED" if self.shortcut_justified else "NOT justified"
        lines = [
            f"Direct shortcut: {verdict} (similarity={self.similarity!r}, alpha={self.alpha:g})",
        ]
        if self.tests:
            lines.append("Assumption tests on the bank representations:")
            for name, test in self.tests.items():
                rejected = test.rejects(self.alpha)
                mark = "FAIL" if rejected else " ok "
                text = f"  [{mark}] {name}: p = {test.p_value:.3g}"
                parts = ", ".join(f"{k} p = {t.p_value:.3g}" for k, t in test.tests.items())
                if parts:
                    text += f" ({parts})"
                if rejected:
                    text += f"\n         -> {_meaning(name)}"
                lines.append(text)
        if self.conditions:
            lines.append("Conditions:")
            for name, condition in self.conditions.items():
                lines.append(f"  {condition}")
                if not condition.passed:
                    lines.append(f"         -> {_meaning(name)}")
        agreement = self.agreement
        level = f"{100 * agreement.confidence:g}%"
        lines.append(
            f"Direct vs exact ranking ({agreement.num_queries} queries x "
            f"{agreement.num_candidates} candidates, {level} bootstrap intervals):"
        )
        lines.append(
            f"  top-1 agreement {agreement.top1_agreement:.3f} "
            f"[{agreement.top1_interval[0]:.3f}, {agreement.top1_interval[1]:.3f}]"
        )
        lines.append(
            f"  mean Kendall tau {agreement.kendall_tau:.3f} "
            f"[{agreement.kendall_tau_interval[0]:.3f}, {agreement.kendall_tau_interval[1]:.3f}]"
        )
        lines.append(
            f"B-C normalizer: sd of log Z(b_m) = {self.log_normalizer_sd:.3g} nats "
            "(the LogSumExp estimator equals the exact marginal when 0)"
        )
        if self.ess is not None:
            ess = self.ess.ess
            size = round(float(self.ess.ess[0] / self.ess.fraction[0]))
            lines.append(
                f"Bank posterior ESS per query: median {float(ess.median()):.1f} "
                f"({100 * float(self.ess.fraction.median()):.3g}% of {size}), "
                f"min {float(ess.min()):.1f}"
            )
        for warning in self.warnings:
            lines.append(f"Warning: {warning}")
        if self.failed_assumptions:
            lines.append("Failed: " + ", ".join(self.failed_assumptions))
        return "\n".join(lines)

    def __str__(self):
        return self.summary()

    def __repr__(self):
        return (
            f"DiagnosticReport(shortcut_justified={self.shortcut_justified}, "
            f"failed_assumptions={self.failed_assumptions}, "
            f"top1_agreement={self.agreement.top1_agreement:.3f}, "
            f"kendall_tau={self.agreement.kendall_tau:.3f})"
        )


def _meaning(name):
    return _MEANINGS.get(name.split(" ")[0], "assumption rejected")
