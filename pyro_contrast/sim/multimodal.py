r"""A multimodal latent-variable simulator for identifiability studies (Daunhawer et al.)."""

import math
import numbers

import torch
import torch.nn.functional as F

from pyro_contrast._validation import check_int

DEPENDENCES = (None, "statistical", "causal")
_SLOPE = 0.2  # leaky-ReLU slope: invertible, and far enough from 1 to be truly nonlinear


class MultimodalLatentModel:
    r"""Two modalities generated from shared content, changing style and private latents.

    .. math::

        x_1 = f_1(c, s, m_1), \qquad x_2 = f_2(c, \tilde s, m_2),

    where the content :math:`c` is shared exactly, the style :math:`s` is shared except that
    each component of :math:`\tilde s` is perturbed (:math:`\tilde s_i = s_i + \epsilon_i`,
    :math:`\epsilon_i \sim N(0, 1)`) with probability ``style_change_prob``, and
    :math:`m_1, m_2` are modality-specific. Each :math:`f_k` is a random invertible MLP: square
    matrices with singular values in [0.5, 1.5] interleaved with leaky-ReLU (slope 0.2),
    ``mixing_layers`` matrices in all. Latent dependence:

    - ``None``: all latents independent standard normal;
    - ``"statistical"``: all blocks jointly Gaussian with a random correlation matrix;
    - ``"causal"``: the content causes the rest, :math:`s = A c + \epsilon`,
      :math:`m_k = B_k c + \epsilon`.

    Contrastive learning on :math:`(x_1, x_2)` block-identifies :math:`c`: a regression from
    the learned representation recovers :math:`c` (R² near 1) but not :math:`m_1, m_2`
    (R² near 0 without dependence), and style in between depending on how often it changes.

    **References**

    1. Daunhawer, Bizeul, Palumbo, Marx & Vogt (2023), *Identifiability Results for Multimodal
       Contrastive Learning*.
    2. von Kügelgen et al. (2021), *Self-Supervised Learning with Data Augmentations Provably
       Isolates Content from Style*.

    :param int content_dim: dimension of :math:`c` (≥ 1).
    :param int style_dim: dimension of :math:`s` (≥ 0).
    :param tuple private_dims: dimensions ``(m1, m2)`` of the private latents (≥ 0 each).
    :param float style_change_prob: probability that a style component changes, in [0, 1].
    :param str dependence: ``None``, ``"statistical"`` or ``"causal"``.
    :param int mixing_layers: number of square matrices per mixing (≥ 1; 1 is linear).
    :param int seed: seed of the mixings and of :meth:`sample`.

    >>> model = MultimodalLatentModel(content_dim=2, style_dim=1, private_dims=(1, 2))
    >>> x1, x2, latents = model.sample(4)
    >>> x1.shape, x2.shape, sorted(latents)
    (torch.Size([4, 4]), torch.Size([4, 5]), ['content', 'm1', 'm2', 'style', 'style_2'])
    """

    def __init__(
        self,
        content_dim=2,
        style_dim=2,
        private_dims=(2, 2),
        style_change_prob=0.5,
        dependence=None,
        mixing_layers=3,
        seed=0,
    ):
        check_int(content_dim, "content_dim", 1)
        check_int(style_dim, "style_dim", 0)
        if not isinstance(private_dims, (tuple, list)) or len(private_dims) != 2:
            raise ValueError(f"private_dims must be a pair (m1, m2), got {private_dims!r}")
        for i, dim in enumerate(private_dims):
            check_int(dim, f"private_dims[{i}]", 0)
        if not (isinstance(style_change_prob, numbers.Real) and 0 <= style_change_prob <= 1):
            raise ValueError(f"style_change_prob must be in [0, 1], got {style_change_prob!r}")
        if dependence not in DEPENDENCES:
            raise ValueError(f"dependence must be one of {DEPENDENCES}, got {dependence!r}")
        check_int(mixing_layers, "mixing_layers", 1)
        self.content_dim, self.style_dim = int(content_dim), int(style_dim)
        self.private_dims = tuple(int(d) for d in private_dims)
        self.style_change_prob = float(style_change_prob)
        self.dependence, self.mixing_layers, self.seed = dependence, int(mixing_layers), seed
        g = torch.Generator().manual_seed(seed)
        self.mixings = [
            [
                _invertible(self.content_dim + self.style_dim + m, g)
                for _ in range(self.mixing_layers)
            ]
            for m in self.private_dims
        ]
        total = self.content_dim + self.style_dim + sum(self.private_dims)
        self.correlation = _random_correlation(total, g) if dependence == "statistical" else None
        if dependence == "causal":
            scale = 1 / math.sqrt(self.content_dim)
            self.causal_weights = {
                name: scale * torch.randn(dim, self.content_dim, generator=g, dtype=torch.float64)
                for name, dim in (
                    ("style", self.style_dim),
                    ("m1", self.private_dims[0]),
                    ("m2", self.private_dims[1]),
                )
            }
        self._generator = torch.Generator().manual_seed(seed + 1)

    @property
    def obs_dims(self):
        """Dimensions ``(d1, d2)`` of the two observed modalities."""
        return tuple(self.content_dim + self.style_dim + m for m in self.private_dims)

    def sample(self, num_samples, dtype=torch.float32):
        """Draw ``(x1, x2, latents)``; ``latents`` maps ``"content"``, ``"style"``,
        ``"style_2"`` (view 2's style), ``"m1"`` and ``"m2"`` to (N, dim) tensors.
        Successive calls continue one reproducible sequence from ``seed``."""
        check_int(num_samples, "num_samples", 1)
        latents = self._latents(int(num_samples))
        x1 = self.mix(0, latents["content"], latents["style"], latents["m1"])
        x2 = self.mix(1, latents["content"], latents["style_2"], latents["m2"])
        return x1.to(dtype), x2.to(dtype), {k: v.to(dtype) for k, v in latents.items()}

    def mix(self, modality, content, style, private):
        """Apply modality ``modality``'s (0 or 1) invertible mixing to its latents."""
        z = torch.cat([content, style, private], -1).to(torch.float64)
        for i, weight in enumerate(self.mixings[modality]):
            z = z @ weight.T
            if i < len(self.mixings[modality]) - 1:
                z = F.leaky_relu(z, _SLOPE)
        return z

    def _latents(self, n):
        g, f64 = self._generator, torch.float64
        dims = [self.content_dim, self.style_dim, *self.private_dims]
        z = torch.randn(n, sum(dims), generator=g, dtype=f64)
        if self.dependence == "statistical":
            z = z @ torch.linalg.cholesky(self.correlation).T
        content, style, m1, m2 = torch.split(z, dims, -1)
        if self.dependence == "causal":
            # Unit-variance noise plus the content's push; the rest stays of comparable scale.
            style = style + content @ self.causal_weights["style"].T
            m1 = m1 + content @ self.causal_weights["m1"].T
            m2 = m2 + content @ self.causal_weights["m2"].T
        changed = torch.rand(n, self.style_dim, generator=g, dtype=f64) < self.style_change_prob
        noise = torch.randn(n, self.style_dim, generator=g, dtype=f64)
        style_2 = style + changed * noise
        return {"content": content, "style": style, "style_2": style_2, "m1": m1, "m2": m2}

    def __repr__(self):
        return (
            f"MultimodalLatentModel(content_dim={self.content_dim}, "
            f"style_dim={self.style_dim}, private_dims={self.private_dims}, "
            f"style_change_prob={self.style_change_prob}, dependence={self.dependence!r}, "
            f"mixing_layers={self.mixing_layers}, seed={self.seed})"
        )


def _invertible(dim, g):
    # Orthogonal factors around singular values in [0.5, 1.5]: condition number <= 3 per layer.
    q1, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    values = 0.5 + torch.rand(dim, generator=g, dtype=torch.float64)
    return q1 @ torch.diag(values) @ q2


def _random_correlation(dim, g):
    factor = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    cov = factor @ factor.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)
    scale = cov.diagonal().rsqrt()
    return scale[:, None] * cov * scale
