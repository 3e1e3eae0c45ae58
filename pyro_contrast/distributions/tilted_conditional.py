r"""The conditional distribution of :math:`y` given :math:`x` that a critic defines."""

import torch
from pyro.distributions import Categorical, TorchDistribution, constraints
from pyro.distributions.util import broadcast_shape

from pyro_contrast.critics import Critic
from pyro_contrast.distributions import _tilt_closed_forms
from pyro_contrast.distributions._bank import (
    bank_scores,
    check_bank,
    encode,
    encode_batch,
    log_total_weight,
    resolve_bank,
    validating,
)
from pyro_contrast.distributions._jit import static_shape


class TiltedConditional(TorchDistribution):
    r"""The conditional :math:`p(y \mid x) = p_{\text{base}}(y)\, e^{f(x, y)} / Z(x)` of a critic.

    A critic at the InfoNCE optimum is :math:`f(x, y) = \mathrm{PMI}(x, y) + g(x)` with
    :math:`g` free, and tilts the product of marginals (Baptista, Stuart & Tran), so

    .. math::

        p(y \mid x) = \frac{p(y)\, e^{f(x, y)}}{Z(x)}, \qquad
        Z(x) = \mathbb{E}_{p(y)}\, e^{f(x, y)},

    which is a normalized conditional density, exactly invariant to :math:`f \to f + g(x)`.
    Use it as a likelihood for a latent :math:`x`,
    ``pyro.sample("y", TiltedConditional(critic, x, base), obs=y)``: unlike the raw score
    :math:`f(x, y)`, it does not multiply the posterior by :math:`e^{g(x)}`. The base is

    - a **bank** of samples :math:`y_m \sim p(y)` (a tensor of items, or a single-view
      :class:`~pyro_contrast.Bank`, whose ``log_weights`` weight the items): :math:`Z(x)`
      is the weighted mean of :math:`e^{f(x, y_m)}` over the bank, exact for the empirical
      base. ``sample`` resamples bank items with probabilities
      :math:`\mathrm{softmax}_m(f(x, y_m) + \log w_m)` (cross-modal generation). ``log_prob``
      is the density *relative to the base*, :math:`\log p(y \mid x) - \log p(y) = f(x, y) -
      \log Z(x)`, for any :math:`y` on or off the bank (the base has no density to add);
      as a likelihood of an observed :math:`y` it differs from the true one by
      :math:`\log p(y)`, a constant in the latents.
    - a **distribution with a closed form** for the y embedding (identity ``encoder_y``):
      :class:`~pyro_contrast.distributions.UniformSphere` or
      :class:`~pyro_contrast.distributions.VonMisesFisher` with a cosine, dot or bilinear
      critic on unit vectors gives a von Mises–Fisher conditional; a Gaussian
      (:class:`~pyro.distributions.MultivariateNormal`) with a dot, bilinear or squared-L2
      critic gives a :class:`~pyro_contrast.distributions.TiltedGaussian`. Sampling is
      exact, ``rsample`` is reparameterized and ``log_prob`` is the full density; the
      conditional itself is the attribute ``closed_form``.

    Either way ``log_normalizer`` is :math:`\log Z(x)` and :meth:`log_density_ratio` gives
    :math:`f(x, y) - \log Z(x)`. The batch shape is that of the encoded ``x``; the event shape
    that of one :math:`y`. :math:`Z` over a bank is a logsumexp of the critic's
    :math:`N \times M` score matrix (a blocked GEMM; never :math:`N \times M \times d`).

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.
    2. Oord, Li & Vinyals (2018), *Representation Learning with Contrastive Predictive Coding*.

    :param Critic critic: the critic :math:`f`.
    :param Tensor x: conditioning inputs, encoded by ``critic.encoder_x`` to ``(..., d)``.
    :param base: a bank (tensor of y items or ``Bank``) or a closed-form distribution.

    >>> import torch, pyro_contrast as pc
    >>> critic = pc.Critic.from_embeddings("cosine", temperature=0.25)
    >>> d = TiltedConditional(critic, torch.randn(4, 3), pc.distributions.UniformSphere(3))
    >>> type(d.closed_form).__name__, d.rsample().shape
    ('VonMisesFisher', torch.Size([4, 3]))
    >>> d = TiltedConditional(critic, torch.randn(4, 3), torch.randn(100, 3))
    >>> d.sample((2,)).shape, d.log_prob(torch.randn(3)).shape
    (torch.Size([2, 4, 3]), torch.Size([4]))
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, critic, x, base, *, validate_args=None):
        if not isinstance(critic, Critic):
            raise TypeError(f"critic must be a pyro_contrast.Critic, got {type(critic).__name__}")
        validate = validating(validate_args)
        self.critic, self.x, self.base = critic, x, base
        embedded_x = encode(critic, "x", x, validate)
        if embedded_x.dim() < 1:
            raise ValueError("x must be encoded to (..., d), got a scalar")
        self._embedded_x = embedded_x
        if _tilt_closed_forms.is_closed_form_base(base):
            self.closed_form, self.log_normalizer = _tilt_closed_forms.tilt(
                critic, embedded_x, base, validate_args
            )
            self.items = self.log_weights = self.logits = None
            shapes = self.closed_form.batch_shape, self.closed_form.event_shape
        else:
            self.closed_form = None
            self.items, self.log_weights = resolve_bank(base, "base")
            if validate:
                check_bank(self.items, self.log_weights, "base")
            embedded_bank = encode(critic, "y", self.items, validate)
            scores = bank_scores(critic, embedded_x, embedded_bank, self.log_weights)
            log_z = scores.logsumexp(-1)
            self.logits = scores - log_z.unsqueeze(-1)
            total = log_total_weight(self.log_weights, self.items.shape[0], log_z.dtype)
            self.log_normalizer = log_z - total
            shapes = embedded_x.shape[:-1], self.items.shape[1:]
        super().__init__(*map(static_shape, shapes), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        if self.closed_form is not None:
            return self.closed_form.support
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def has_rsample(self):
        return self.closed_form is not None

    @staticmethod
    def infer_shapes(critic=None, x=None, base=None):
        """Shapes from the shape of ``x`` and the base (a bank's shape, or the base itself)."""
        if isinstance(base, (tuple, torch.Size)):
            return torch.Size(x[:-1]), torch.Size(base[1:])
        if hasattr(base, "event_shape"):
            batch_shape = broadcast_shape(x[:-1], base.batch_shape)
            return torch.Size(batch_shape), base.event_shape
        items, _ = resolve_bank(base, "base")
        return torch.Size(x[:-1]), items.shape[1:]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TiltedConditional, _instance)
        batch_shape = torch.Size(batch_shape)
        new.critic, new.x, new.base = self.critic, self.x, self.base
        new.items, new.log_weights = self.items, self.log_weights
        new._embedded_x = self._embedded_x.expand(batch_shape + self._embedded_x.shape[-1:])
        new.log_normalizer = self.log_normalizer.expand(batch_shape)
        if self.closed_form is not None:
            new.closed_form, new.logits = self.closed_form.expand(batch_shape), None
        else:
            new.closed_form = None
            new.logits = self.logits.expand(batch_shape + self.logits.shape[-1:])
        super(TiltedConditional, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_density_ratio(self, value):
        r""":math:`f(x, y) - \log Z(x) = \log p(y \mid x) - \log p_{\text{base}}(y)`."""
        if self._validate_args:
            self._validate_sample(value)
        event_dim = len(self.event_shape)
        validate = bool(self._validate_args)
        embedded = encode_batch(self.critic, "y", value, event_dim, validate)
        return self.critic.score_embeddings(self._embedded_x, embedded) - self.log_normalizer

    def log_prob(self, value):
        if self.closed_form is not None:
            return self.closed_form.log_prob(value)
        return self.log_density_ratio(value)

    def sample(self, sample_shape=()):
        if self.closed_form is not None:
            return self.closed_form.sample(sample_shape)
        with torch.no_grad():
            index = Categorical(logits=self.logits).sample(sample_shape)
            return self.items[index]

    def rsample(self, sample_shape=()):
        if self.closed_form is None:
            raise NotImplementedError("a bank base is resampled: there is no rsample")
        return self.closed_form.rsample(sample_shape)

    def _bank_moments(self):
        probs = self.logits.exp()
        items = self.items.reshape(self.items.shape[0], -1).to(probs.dtype)
        # centring at the bank mean limits the cancellation in E[y^2] - E[y]^2, and keeps
        # memory O(N M) (no N x M x d tensor of deviations)
        centre = items.mean(0)
        items = items - centre
        offset = probs @ items
        variance = (probs @ items.square() - offset.square()).clamp(min=0)
        mean = offset + centre
        shape = self.batch_shape + self.event_shape
        return mean.reshape(shape), variance.reshape(shape)

    @property
    def mean(self):
        if self.closed_form is not None:
            return self.closed_form.mean
        return self._bank_moments()[0]

    @property
    def variance(self):
        if self.closed_form is not None:
            return self.closed_form.variance
        return self._bank_moments()[1]

    @property
    def mode(self):
        if self.closed_form is not None:
            return self.closed_form.mode
        return self.items[self.logits.argmax(-1)]

    def entropy(self):
        if self.closed_form is not None:
            return self.closed_form.entropy()
        raise NotImplementedError("a bank base has no density: only relative entropies exist")
