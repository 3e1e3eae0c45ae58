r"""Content, style and modality-specific latents with the dependences of Daunhawer et al."""

import numbers

import torch

from pyro_contrast.sim.multimodal import MultimodalLatentModel

_BLOCKS = ("content", "style", "m1", "m2")


class ContentStyleModel:
    r"""Two modalities from shared content, perturbed style and private latents.

    The generative process of Daunhawer et al.'s numerical simulation:

    .. math::

        x_1 = f_1(c, s, m_1), \qquad x_2 = f_2(c, \tilde s, m_2), \qquad
        \tilde s_i = s_i + \delta_i \varepsilon_i, \quad \delta_i \sim \mathrm{Bernoulli}(p),

    with distinct invertible mixings :math:`f_1 \ne f_2` (random leaky-ReLU MLPs, those of
    :class:`~pyro_contrast.sim.MultimodalLatentModel`). The paper's two kinds of
    dependence, which can be combined:

    - **statistical** (within blocks): each block is :math:`\mathcal N(0, \Sigma_b)` with
      :math:`\Sigma_b \sim \mathrm{Wishart}(\dim b, I)` drawn once per block, and so is the
      style perturbation :math:`\varepsilon \sim \mathcal N(0, \Sigma_\varepsilon)`;
      otherwise every block and :math:`\varepsilon` are standard normal;
    - **causal** (content → style): :math:`s = s_0 + B c + a` with
      :math:`B_{ij}, a_i \sim \mathcal N(0, 1)` drawn once; the private latents stay
      independent of the content.

    Contrastive learning on :math:`(x_1, x_2)` block-identifies :math:`c` (the paper's
    Theorem 1): a regression from the learned representation recovers :math:`c` and nothing
    of :math:`m_1, m_2`, whatever the dependences.

    **References**

    1. Daunhawer, Bizeul, Palumbo, Marx & Vogt (2023), *Identifiability Results for Multimodal
       Contrastive Learning*, ICLR.

    :param int content_dim: dimension of :math:`c` (≥ 1).
    :param int style_dim: dimension of :math:`s` (≥ 0).
    :param int private_dim: dimension of each of :math:`m_1, m_2` (≥ 0).
    :param float style_change_prob: :math:`p`, in [0, 1].
    :param bool statistical_dependence: Wishart covariances within blocks.
    :param bool causal_dependence: style depends on content.
    :param int mixing_layers: square matrices per mixing (≥ 1; 1 is linear).
    :param int seed: seed of the mixings, the dependence parameters and :meth:`sample`.

    >>> model = ContentStyleModel(content_dim=2, style_dim=1, private_dim=1)
    >>> x1, x2, latents = model.sample(3)
    >>> x1.shape, sorted(latents)
    (torch.Size([3, 4]), ['content', 'm1', 'm2', 'style', 'style_2'])
    """

    def __init__(
        self,
        content_dim=5,
        style_dim=5,
        private_dim=5,
        style_change_prob=0.75,
        statistical_dependence=False,
        causal_dependence=False,
        mixing_layers=3,
        seed=0,
    ):
        for name, value in (
            ("statistical_dependence", statistical_dependence),
            ("causal_dependence", causal_dependence),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        if not (isinstance(style_change_prob, numbers.Real) and 0 <= style_change_prob <= 1):
            raise ValueError(f"style_change_prob must be in [0, 1], got {style_change_prob!r}")
        # The mixing holder validates the dimensions and the number of layers.
        self.mixing = MultimodalLatentModel(
            content_dim=content_dim,
            style_dim=style_dim,
            private_dims=(private_dim, private_dim),
            style_change_prob=style_change_prob,
            dependence=None,
            mixing_layers=mixing_layers,
            seed=seed,
        )
        self.content_dim, self.style_dim = int(content_dim), int(style_dim)
        self.private_dim, self.style_change_prob = int(private_dim), float(style_change_prob)
        self.statistical_dependence = statistical_dependence
        self.causal_dependence = causal_dependence
        self.seed = seed
        g = torch.Generator().manual_seed(seed + 7919)
        f64 = torch.float64
        dims = {
            "content": self.content_dim,
            "style": self.style_dim,
            "m1": self.private_dim,
            "m2": self.private_dim,
            "perturbation": self.style_dim,
        }
        #: block name -> covariance (identity without statistical dependence), float64.
        self.covariances = {
            name: _wishart(dim, g) if statistical_dependence else torch.eye(dim, dtype=f64)
            for name, dim in dims.items()
        }
        self._trils = {name: _cholesky_or_empty(cov) for name, cov in self.covariances.items()}
        #: :math:`B` (style_dim, content_dim) and :math:`a` of the causal dependence, or None.
        self.causal_weight = self.causal_offset = None
        if causal_dependence:
            self.causal_weight = torch.randn(
                self.style_dim, self.content_dim, generator=g, dtype=f64
            )
            self.causal_offset = torch.randn(self.style_dim, generator=g, dtype=f64)
        self._generator = torch.Generator().manual_seed(seed + 1)

    @property
    def obs_dims(self):
        """Dimensions ``(d1, d2)`` of the two observed modalities."""
        return self.mixing.obs_dims

    def sample(self, num_samples, *, generator=None, dtype=torch.float32):
        """Draw ``(x1, x2, latents)``; ``latents`` maps ``"content"``, ``"style"``,
        ``"style_2"`` (the perturbed style of modality 2), ``"m1"`` and ``"m2"`` to
        ``(N, dim)`` tensors. Without ``generator`` successive calls continue one
        reproducible sequence from ``seed``."""
        latents = self.sample_latents(num_samples, generator=generator)
        x1 = self.mixing.mix(0, latents["content"], latents["style"], latents["m1"])
        x2 = self.mixing.mix(1, latents["content"], latents["style_2"], latents["m2"])
        return x1.to(dtype), x2.to(dtype), {k: v.to(dtype) for k, v in latents.items()}

    def sample_latents(self, num_samples, *, generator=None):
        """Draw the latent blocks only (float64), as :meth:`sample` does."""
        if (
            not isinstance(num_samples, numbers.Integral)
            or isinstance(num_samples, bool)
            or num_samples < 1
        ):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        num_samples = int(num_samples)
        g = self._generator if generator is None else generator
        f64 = torch.float64
        draws = {}
        for name, tril in self._trils.items():
            noise = torch.randn(num_samples, tril.shape[0], generator=g, dtype=f64)
            draws[name] = noise @ tril.T
        style = draws["style"]
        if self.causal_dependence:
            style = style + draws["content"] @ self.causal_weight.T + self.causal_offset
        changed = torch.rand(num_samples, self.style_dim, generator=g, dtype=f64)
        changed = changed < self.style_change_prob
        style_2 = style + changed * draws["perturbation"]
        return {
            "content": draws["content"],
            "style": style,
            "style_2": style_2,
            "m1": draws["m1"],
            "m2": draws["m2"],
        }

    def __repr__(self):
        return (
            f"ContentStyleModel(content_dim={self.content_dim}, style_dim={self.style_dim}, "
            f"private_dim={self.private_dim}, style_change_prob={self.style_change_prob}, "
            f"statistical_dependence={self.statistical_dependence}, "
            f"causal_dependence={self.causal_dependence}, "
            f"mixing_layers={self.mixing.mixing_layers}, seed={self.seed})"
        )


def _wishart(dim, g):
    # Wishart(dim, I): the scatter matrix of `dim` standard normal vectors (mean dim * I).
    if dim == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    factor = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return factor @ factor.T


def _cholesky_or_empty(cov):
    if cov.shape[0] == 0:
        return cov
    return torch.linalg.cholesky(cov)
