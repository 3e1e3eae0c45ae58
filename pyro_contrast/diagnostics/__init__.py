"""Tests of the assumptions behind the direct shortcut, and :func:`diagnose` for a bridge."""

from pyro_contrast.diagnostics._result import DiagnosticResult
from pyro_contrast.diagnostics.agreement import RankingAgreement, ranking_agreement
from pyro_contrast.diagnostics.calibration import CalibrationBins, CalibrationResult, calibration
from pyro_contrast.diagnostics.gaussian import gaussianity, isotropy
from pyro_contrast.diagnostics.independence import conditional_independence
from pyro_contrast.diagnostics.report import Condition, DiagnosticReport
from pyro_contrast.diagnostics.shortcut import diagnose
from pyro_contrast.diagnostics.sphere import sphere_uniformity
from pyro_contrast.diagnostics.weights import EffectiveSampleSize, effective_sample_size

__all__ = [
    "CalibrationBins",
    "CalibrationResult",
    "Condition",
    "DiagnosticReport",
    "DiagnosticResult",
    "EffectiveSampleSize",
    "RankingAgreement",
    "calibration",
    "conditional_independence",
    "diagnose",
    "effective_sample_size",
    "gaussianity",
    "isotropy",
    "ranking_agreement",
    "sphere_uniformity",
]
