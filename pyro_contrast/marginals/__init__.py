"""Marginalization strategies over bridge modalities: exact, LogSumExp, analytic."""

from pyro_contrast.marginals.analytic import analytic_log_ratio, resolve_marginal

__all__ = ["analytic_log_ratio", "resolve_marginal"]
