"""The demo's verdict is computed from the numbers: swap the methods and it follows them."""

from types import SimpleNamespace

import numpy as np
import pytest

from pyro_contrast.cli.verdict import format_verdict, paired_difference, scene_verdict


def _scene(num_queries=600, num_candidates=16, seed=0):
    rng = np.random.default_rng(seed)
    truth = 2.0 * rng.normal(size=(num_queries, num_candidates))
    p = np.exp(truth - truth.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    positives = (p.cumsum(1) > rng.random((num_queries, 1))).argmax(1)
    close = truth + 0.2 * rng.normal(size=truth.shape)
    far = truth + 1.5 * rng.normal(size=truth.shape)
    noise = 3.0 * rng.normal(size=truth.shape)
    return truth, positives, close, far, noise


def _report(justified, agreement=0.5, failed=("sphere_uniformity",)):
    return SimpleNamespace(
        shortcut_justified=justified,
        failed_assumptions=[] if justified else list(failed),
        agreement=SimpleNamespace(top1_agreement=agreement),
    )


def test_the_closest_method_wins_whatever_its_name():
    truth, positives, close, far, noise = _scene()
    sentences = scene_verdict(
        {"exact": far, "lse": noise, "direct": close}, truth, positives, num_bootstrap=200
    )
    assert sentences[0].startswith("direct is closest to the truth")
    assert "The direct shortcut is the best method here" in " ".join(sentences)
    assert sentences[-1].startswith("Use: direct")
    sentences = scene_verdict(
        {"exact": close, "lse": far, "direct": noise}, truth, positives, num_bootstrap=200
    )
    assert sentences[0].startswith("exact is closest to the truth")
    assert "lse: " in sentences[0] and "direct: " in sentences[0]
    assert sentences[-1] == "Use: exact, not the direct shortcut."


def test_equal_methods_are_called_equal_and_numbers_are_the_data():
    truth, positives, close, far, noise = _scene()
    twin = close + 1e-3 * np.random.default_rng(9).normal(size=close.shape)
    sentences = scene_verdict(
        {"exact": close, "lse": twin, "direct": noise}, truth, positives, num_bootstrap=200
    )
    assert "are equally close to the truth" in sentences[0]
    assert sentences[-1] in (
        "Use: exact or lse, not the direct shortcut.",
        "Use: lse or exact, not the direct shortcut.",
    )
    from pyro_contrast.studies.metrics import kl_divergence, recall_at_k

    assert f"direct: {kl_divergence(truth, noise).mean():.3g}" in sentences[0]
    best_recall = recall_at_k(close, positives, 1).mean()
    truth_recall = recall_at_k(truth, positives, 1).mean()
    assert f"{100 * truth_recall:.1f}%" in sentences[1]
    assert f"{100 * best_recall:.1f}%" in sentences[1] or "lse" in sentences[1]


def test_chance_level_shortcut_and_the_diagnosis():
    truth, positives, close, far, noise = _scene()
    flat = np.zeros_like(truth)  # every candidate tied: exactly chance, 1/16, per query
    sentences = scene_verdict(
        {"exact": close, "direct": flat},
        truth,
        positives,
        report=_report(False, 0.06, ("shared_representation", "top1_agreement")),
        direct_note="two models",
        num_bootstrap=200,
    )
    text = " ".join(sentences)
    assert "6.2% of queries: chance level (two models)" in text
    assert "NOT justified (failed: shared_representation, top1_agreement)" in text
    assert "same best candidate for 6.0% of queries" in text
    # a better-than-chance shortcut gets its gap to the best method with an interval
    sentences = scene_verdict(
        {"exact": close, "direct": far}, truth, positives, report=_report(False), num_bootstrap=200
    )
    direct = next(s for s in sentences if s.startswith("The direct shortcut"))
    assert "points fewer than exact (95% interval" in direct


def test_justified_shortcut_is_recommended_only_when_it_is_as_good():
    truth, positives, close, far, noise = _scene()
    twin = close + 1e-3 * np.random.default_rng(4).normal(size=close.shape)
    sentences = scene_verdict(
        {"exact": close, "direct": twin}, truth, positives, report=_report(True, 0.97)
    )
    assert "diagnose: the shortcut is justified" in " ".join(sentences)
    assert sentences[-1].startswith("Use: the direct shortcut is justified")
    sentences = scene_verdict(
        {"exact": close, "direct": twin}, truth, positives, report=_report(False)
    )
    assert "do not rely on it elsewhere" in sentences[-1]


def test_paired_difference():
    rng = np.random.default_rng(0)
    first = rng.normal(0.3, 1.0, size=2000)
    second = first - 0.3 + 0.1 * rng.normal(size=2000)
    difference = paired_difference(first, second, num_bootstrap=500)
    assert difference.clear and difference.lower < 0.3 < difference.upper
    # pairing: the shared per-query noise cancels, so the interval is narrow
    assert difference.upper - difference.lower < 0.05
    same = paired_difference(first, first + 1e-3 * rng.normal(size=2000), num_bootstrap=500)
    assert not same.clear
    assert paired_difference(first, second, num_bootstrap=0).lower == pytest.approx(
        (first - second).mean()
    )


def test_verdict_lines_are_wrapped():
    lines = format_verdict("shared", ["word " * 60], 80)
    assert lines[0] == "Verdict (shared):"
    assert all(len(line) <= 80 for line in lines) and len(lines) > 3
