"""Studies: comparing methods against each other and the truth, and keeping the results.

Modules: :mod:`~pyro_contrast.studies.metrics` (recall, KL, rank correlations, calibration),
:mod:`~pyro_contrast.studies.compare` (:func:`compare` with bootstrap intervals),
:mod:`~pyro_contrast.studies.study` (:class:`Study` folders, :class:`ComparisonResult`),
:mod:`~pyro_contrast.studies.arviz` (ArviZ ``InferenceData``), :mod:`~pyro_contrast.studies.plots`
(matplotlib, loaded lazily), :mod:`~pyro_contrast.studies.io` (embedding files) and
:mod:`~pyro_contrast.studies.identifiability` (R² of latent recovery). This layer may import
every layer below it (training, sim, marginals, distributions, critics, ops); only
diagnostics and the command line sit above it.
"""
