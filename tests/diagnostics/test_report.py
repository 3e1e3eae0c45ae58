import pytest
import torch

from pyro_contrast.diagnostics import (
    Condition,
    DiagnosticReport,
    DiagnosticResult,
    effective_sample_size,
    ranking_agreement,
)


def _report(p_value, passed):
    reference = torch.randn(40, 5)
    test = DiagnosticResult(
        name="sphere_uniformity",
        statistic=0.1,
        p_value=p_value,
        tests={"rayleigh": DiagnosticResult(name="rayleigh", statistic=3.0, p_value=p_value)},
    )
    condition = Condition("normalizer_constancy", 0.3 if not passed else 0.01, 0.1, passed, "sd")
    return DiagnosticReport(
        shortcut_justified=p_value > 0.05 and passed,
        failed_assumptions=[],
        tests={"sphere_uniformity": test},
        conditions={"normalizer_constancy": condition},
        agreement=ranking_agreement(-reference, reference, generator=0),
        ess=effective_sample_size(torch.zeros(40, 7)),
        similarity="cosine",
        alpha=0.05,
        log_normalizer_sd=0.25,
        warnings=["a caveat"],
    )


def test_summary_explains_each_failure():
    text = _report(1e-4, passed=False).summary()
    assert "NOT justified" in text
    assert "[FAIL] sphere_uniformity: p = 0.0001 (rayleigh p = 0.0001)" in text
    assert "not uniform on the sphere" in text
    assert "[FAIL] normalizer_constancy: 0.3 <= 0.1" in text
    assert "log Z(b_m) varies over the bank" in text
    assert "top-1 agreement 0.000" in text
    assert "median 7.0 (100% of 7)" in text
    assert "Warning: a caveat" in text


def test_summary_of_a_pass():
    report = _report(0.5, passed=True)
    text = str(report)
    assert text.startswith("Direct shortcut: JUSTIFIED")
    assert "[ ok ] sphere_uniformity" in text and "->" not in text
    assert "shortcut_justified=True" in repr(report)


def test_result_repr_and_rejects():
    inner = DiagnosticResult(name="rayleigh", statistic=1.5, p_value=0.2, dof=3)
    outer = DiagnosticResult(
        name="combo", statistic=0.2, p_value=0.4, tests={"r": inner}, notes=("normalized",)
    )
    text = repr(outer)
    assert text.startswith("combo(statistic=0.2, p_value=0.4)")
    assert "r: rayleigh(statistic=1.5, p_value=0.2, dof=3)" in text
    assert "note: normalized" in text
    assert inner.rejects(0.25) and not inner.rejects(0.1)
    with pytest.raises(ValueError, match="alpha"):
        inner.rejects(1.5)
    with pytest.raises(TypeError):
        outer.tests["s"] = inner  # read-only mapping
    with pytest.raises(AttributeError):
        outer.p_value = 0.0  # frozen
