"""A plain-language verdict on a study with a known truth: which method is closest to it, by
how much, and whether the direct shortcut is justified.

Every sentence is computed from the numbers: the methods are ranked by their KL divergence
from the truth's candidate distribution, and two methods are called different only when a
paired bootstrap interval of their per-query difference excludes zero.
"""

import textwrap
from dataclasses import dataclass

import numpy as np

from pyro_contrast.studies import metrics as _metrics


@dataclass(frozen=True)
class Difference:
    """Mean per-query difference ``first - second`` with a paired bootstrap interval."""

    estimate: float
    lower: float
    upper: float

    @property
    def clear(self):
        """Whether the interval excludes zero."""
        return self.lower > 0 or self.upper < 0


def paired_difference(first, second, *, num_bootstrap=1000, confidence=0.95, seed=0):
    """Mean of ``first - second`` over queries, with a percentile bootstrap interval.

    :param numpy.ndarray first: ``(N,)`` per-query values of one method.
    :param numpy.ndarray second: ``(N,)`` per-query values of another, same queries.
    :returns: :class:`Difference` (``lower == upper == estimate`` without replicates).
    """
    delta = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    estimate = float(delta.mean())
    if num_bootstrap == 0:
        return Difference(estimate, estimate, estimate)
    rng = np.random.default_rng(seed)
    means = np.empty(num_bootstrap)
    block = max(1, 2**20 // delta.size)
    for start in range(0, num_bootstrap, block):
        size = min(block, num_bootstrap - start)
        means[start : start + size] = delta[rng.integers(0, delta.size, (size, delta.size))].mean(1)
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(means, [alpha, 1 - alpha])
    return Difference(estimate, float(lower), float(upper))


def scene_verdict(
    scores,
    truth,
    positives,
    *,
    report=None,
    direct_note=None,
    num_bootstrap=1000,
    seed=0,
):
    """The verdict on one scene, as a list of sentences.

    :param dict scores: method → ``(N, K)`` scores (not including the truth).
    :param numpy.ndarray truth: ``(N, K)`` true log ratios.
    :param numpy.ndarray positives: ``(N,)`` true candidates.
    :param report: the :class:`~pyro_contrast.diagnostics.DiagnosticReport` of the shortcut.
    :param str direct_note: why the shortcut has no meaning here, if it has none.
    :returns: list of str.
    """
    num_candidates = truth.shape[1]
    kl = {m: _metrics.kl_divergence(truth, s) for m, s in scores.items()}
    recall = {m: _metrics.recall_at_k(s, positives, 1) for m, s in scores.items()}
    true_recall = float(_metrics.recall_at_k(truth, positives, 1).mean())
    chance = 1.0 / num_candidates
    mean_kl = {m: float(v.mean()) for m, v in kl.items()}
    order = sorted(kl, key=mean_kl.get)
    best = order[0]
    options = dict(num_bootstrap=num_bootstrap, seed=seed)
    tied = [m for m in order[1:] if _equivalent(kl[m], kl[best], options)]
    others = [m for m in order[1:] if m not in tied]
    rest = "; ".join(f"{m}: {mean_kl[m]:.3g}{_times(mean_kl[m], mean_kl[best])}" for m in others)
    if tied:
        group = [best] + tied
        values = _join([f"{mean_kl[m]:.3g}" for m in group])
        sentences = [
            f"{_join(group)} are equally close to the truth: their candidate probabilities "
            f"are {values} nats from the truth's (KL; within {_TIE:.0%} or bootstrap noise of "
            "each other)" + (f"; {rest}." if rest else ".")
        ]
    else:
        sentences = [
            f"{best} is closest to the truth: its candidate probabilities are "
            f"{mean_kl[best]:.3g} nats from the truth's (KL)" + (f"; {rest}." if rest else ".")
        ]
    also = "".join(f"; {m}: {_percent(recall[m].mean())}" for m in tied)
    sentences.append(
        f"{best} ranks the true partner first for {_percent(recall[best].mean())} of queries "
        f"(the truth itself: {_percent(true_recall)}; chance: {_percent(chance)}{also})."
    )
    if "direct" in scores:
        sentences.append(_direct_sentence(best, recall, chance, direct_note, options))
    if report is not None:
        sentences.append(_diagnose_sentence(report))
    sentences.append(_recommendation(best, tied, report, scores))
    return sentences


# Two methods whose mean KL from the truth differ by less than this fraction of the smaller
# are called equally close even when the bootstrap resolves the difference: a user picking
# between them would not notice it.
_TIE = 0.1


def _equivalent(kl_other, kl_best, options):
    difference = paired_difference(kl_other, kl_best, **options)
    return not difference.clear or difference.estimate <= _TIE * float(kl_best.mean())


def _times(value, best):
    ratio = value / max(best, 1e-12)
    if ratio < 2:
        return ""
    return f" ({ratio:.2g}x as far)" if ratio < 10 else f" ({ratio:.0f}x as far)"


def _join(names):
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _direct_sentence(best, recall, chance, direct_note, options):
    value = recall["direct"].mean()
    if best == "direct":
        return f"The direct shortcut is the best method here ({_percent(value)} top-1)."
    difference = paired_difference(recall[best], recall["direct"], **options)
    at_chance = paired_difference(
        recall["direct"], np.full_like(recall["direct"], chance), **options
    )
    text = f"The direct shortcut ranks the true partner first for {_percent(value)} of queries"
    if not at_chance.clear:
        text += ": chance level"
    elif difference.clear:
        text += (
            f", {100 * abs(difference.estimate):.1f} points "
            f"{'fewer' if difference.estimate > 0 else 'more'} than {best} "
            f"(95% interval {100 * difference.lower:.1f} to {100 * difference.upper:.1f})"
        )
    else:
        text += f", as often as {best} within bootstrap noise"
    if direct_note:
        text += f" ({direct_note})"
    return text + "."


def _diagnose_sentence(report):
    agreement = report.agreement.top1_agreement
    if report.shortcut_justified:
        return (
            f"diagnose: the shortcut is justified (every assumption holds; direct and exact "
            f"pick the same best candidate for {_percent(agreement)} of queries)."
        )
    failed = ", ".join(report.failed_assumptions)
    return (
        f"diagnose: the shortcut is NOT justified (failed: {failed}); direct and exact pick "
        f"the same best candidate for {_percent(agreement)} of queries."
    )


def _recommendation(best, tied, report, scores):
    justified = report is not None and report.shortcut_justified
    good = [best] + tied
    if "direct" in good and justified:
        return "Use: the direct shortcut is justified and as good as any method here."
    if "direct" in good:
        return (
            f"Use: {' or '.join(good)}; the shortcut happens to do well here, but its "
            "assumptions do not hold, so do not rely on it elsewhere."
        )
    text = f"Use: {' or '.join(good)}"
    if "direct" in scores:
        text += ", not the direct shortcut"
    return text + "."


def _percent(value):
    return f"{100 * value:.1f}%"


def format_verdict(name, sentences, width):
    """The verdict as wrapped lines under a ``Verdict (<name>):`` heading."""
    lines = [f"Verdict ({name}):"]
    for sentence in sentences:
        lines += textwrap.wrap(sentence, width, initial_indent="  - ", subsequent_indent="    ")
    return lines
