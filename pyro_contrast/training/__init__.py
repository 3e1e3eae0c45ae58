"""Training critics: losses, the training loop, checkpoints, linear closed forms, Bayesian fits.

Modules: :mod:`~pyro_contrast.training.losses` (InfoNCE and relatives, a registry),
:mod:`~pyro_contrast.training.fit` (:func:`fit`, the one training loop),
:mod:`~pyro_contrast.training.history` (the record of a run),
:mod:`~pyro_contrast.training.checkpoint` (weights-only files),
:mod:`~pyro_contrast.training.linear` (SVD solutions of linear contrastive learning) and
:mod:`~pyro_contrast.training.bayes` (SVI and NUTS over a critic's parameters, through the
same loop). This layer may import critics, distributions, marginals and ops, never studies,
diagnostics or the command line.
"""
