"""Marginalization strategies over bridge modalities: exact, LogSumExp, analytic."""
