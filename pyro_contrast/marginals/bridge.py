r"""The bridge: compare two modalities that were never paired, through one or more others."""

import math

import torch
from torch.distributions import MultivariateNormal
from tqdm.auto import tqdm

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.critics import Critic
from pyro_contrast.distributions.bridged_conditional import BridgedConditional
from pyro_contrast.marginals import chain
from pyro_contrast.marginals.analytic import analytic_log_ratio, resolve_marginal
from pyro_contrast.marginals.bank import DEFAULT_CHUNK_SIZE, Bank
from pyro_contrast.ops import logmatmul

METHODS = ("exact", "lse", "direct", "analytic")


class Bridge:
    r"""A chain of critics A – B – C (or longer) with banks of the bridge modalities.

    With critics :math:`f_{AB}, f_{BC}` and :math:`A \perp C \mid B`, the likelihood ratio of
    the unpaired pair integrates the bridge out (Che & Eysenbach, Lemma 1):

    .. math::

        \frac{p(c \mid a)}{p(c)} = \mathbb{E}_{p(b)}\left[\frac{p(b \mid a)}{p(b)}
        \frac{p(c \mid b)}{p(c)}\right].

    Over a bank :math:`\{b_m\} \sim p(b)` and candidates :math:`\{c_k\}` the methods are

    - ``"exact"``: the tilted model's marginal :math:`\log \sum_m p(b_m \mid a)
      p(c_k \mid b_m) + \log K`, both conditionals normalized (the C normalizer over the
      candidates, or over ``target_bank``); ``softmax_k`` of it is the exact candidate
      conditional, equal to Pyro's enumeration of the bank index;
    - ``"lse"``: the LogSumExp estimator :math:`\log \mathrm{mean}_m \exp(f_{AB}(a, b_m) +
      f_{BC}(b_m, c_k))`, exact only when the B–C normalizer is constant over the bank;
    - ``"direct"``: the shortcut, the first critic's A encoder against the last critic's C
      encoder with the shared similarity at ``direct_temperature``;
    - ``"analytic"``: a closed form when ``marginal`` declares the bridge's representation
      distribution (``"sphere"``, ``"gaussian"`` fitted from the bank, or a distribution),
      the large-bank limit of ``"exact"``. With a Gaussian marginal and ``target_bank`` the C
      normalizer is a Gaussian fitted to the target bank; without ``target_bank`` it is taken
      as constant, which fixes rankings and candidate softmaxes but leaves the log ratios
      offset by an unknown constant per query.

    Longer chains take more critics and banks: ``Bridge([f_ab, f_bc, f_cd], [bank_b,
    bank_c])``. A hub with several observed modalities (fusion, :math:`a_1 \perp a_2 \mid
    b`) takes a tuple of critics first and a tuple of queries: ``Bridge([(f_1b, f_2b), f_bc],
    [bank])`` and ``log_ratio((a1, a2), c)``.

    References:

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*.
    2. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param list critics: critics along the chain; ``len(critics) == len(banks) + 1``.
    :param list banks: one :class:`~pyro_contrast.Bank` (or tensor of raw items) per bridge.
    :param marginal: representation marginal for ``"analytic"``.
    :param target_bank: samples of the last modality for the C normalizer (default: the
        candidates themselves).
    :param float direct_temperature: temperature of the shortcut (default: the first
        critic's).
    :param int chunk_size: bank rows per streamed chunk.
    :param bool progress: show a progress bar when a bank is streamed in several chunks.

    >>> ab = Critic.from_embeddings("cosine", temperature=0.2)
    >>> bc = Critic.from_embeddings("cosine", temperature=0.2)
    >>> bridge = Bridge([ab, bc], [Bank(torch.randn(64, 8))])
    >>> bridge.log_ratio(torch.randn(3, 8), torch.randn(5, 8)).shape
    torch.Size([3, 5])
    """

    def __init__(
        self,
        critics,
        banks,
        *,
        marginal=None,
        target_bank=None,
        direct_temperature=None,
        chunk_size=None,
        progress=True,
    ):
        if not isinstance(critics, (list, tuple)) or not isinstance(banks, (list, tuple)):
            raise TypeError("critics and banks must be lists")
        if len(banks) < 1 or len(critics) != len(banks) + 1:
            raise ValueError(
                f"a chain needs len(critics) == len(banks) + 1 >= 2, got {len(critics)} "
                f"critics and {len(banks)} banks"
            )
        hops = [tuple(c) if isinstance(c, (list, tuple)) else (c,) for c in critics]
        for i, hop in enumerate(hops):
            if not hop or (i > 0 and len(hop) != 1):
                raise ValueError(f"critics[{i}]: only the first hop may hold several critics")
            for critic in hop:
                if not isinstance(critic, Critic):
                    raise TypeError(
                        f"critics[{i}] must be pyro_contrast.Critic, got {type(critic)}"
                    )
        self.critics = list(critics)
        self._hops = hops
        self.banks = [b if isinstance(b, Bank) else Bank(b) for b in banks]
        for i, bank in enumerate(self.banks):
            bank.check_views(len(hops[i]) + 1)
            if len(self.banks) > 1 and bank.kind == "dask":
                raise ValueError("dask banks are supported for three-modality chains only")
        self.marginal = marginal
        self.target_bank = None
        if target_bank is not None:
            self.target_bank = check_finite(
                as_float_tensor(target_bank, "target_bank"), "target_bank"
            )
            if self.target_bank.shape[0] == 0:
                raise ValueError("target_bank is empty")
        if direct_temperature is not None and not direct_temperature > 0:
            raise ValueError(f"direct_temperature must be positive, got {direct_temperature!r}")
        self.direct_temperature = direct_temperature
        self.chunk_size = chunk_size
        self.progress = progress
        self._resolved_marginal = None
        self._cache_state, self._cache = None, {}
        self._targets_state, self._targets = None, None

    def __repr__(self):
        return f"Bridge(num_critics={len(self._hops)}, banks={self.banks})"

    def log_ratio(self, a, c, method="exact"):
        r"""Estimates of :math:`\log p(c_k \mid a_n) - \log p(c_k)` for all pairs, (N, K)."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        queries = self._encode_queries(a)
        candidates = self._encode_candidates(c)
        if method == "direct":
            return self._direct(queries, candidates)
        if method == "analytic":
            return self._analytic(a, c)
        targets = self._encoded_targets()
        if len(self.banks) == 1:
            return self._three_chain(queries, candidates, targets, method)
        return self._long_chain(queries, candidates, targets, method)

    def conditional(self, a, candidates, method="exact"):
        """The Pyro distribution over candidate indices given queries ``a`` (batch (N,))."""
        return BridgedConditional(self, a, candidates, method=method)

    def explain(self, a, c, *, bank_index=0):
        r"""Posterior :math:`p(b_m \mid a_n, c_n)` over bank ``bank_index`` for aligned pairs,
        (N, M). The C normalizer is over the rows of ``c`` (or ``target_bank``)."""
        if not 0 <= bank_index < len(self.banks):
            raise ValueError(f"bank_index must be in [0, {len(self.banks)}), got {bank_index}")
        queries = self._encode_queries(a)
        targets_c = self._encode_candidates(c)
        if targets_c.shape[0] != queries[0].shape[0]:
            raise ValueError(
                f"explain needs aligned pairs: a has {queries[0].shape[0]} rows, c has "
                f"{targets_c.shape[0]}"
            )
        norm = targets_c if self.target_bank is None else self._encoded_targets()
        encoded = [self._encode_bank(i) for i in range(len(self.banks))]
        alphas = chain.forward_messages(self._hops, queries, encoded, normalized=True)
        last = self._hops[-1][0]
        right = encoded[-1][1]
        log_z = chain.log_normalizer(last, right, norm)
        last_scores = last.pairwise_embeddings(right, targets_c).T - log_z
        betas = chain.backward_messages(self._hops, encoded, last_scores)
        return (alphas[bank_index] + betas[bank_index]).softmax(-1)

    def embed_bank(self, index=0):
        """Bank ``index`` as seen by the critic on its left (``encode_y``, first left critic)
        and on its right (``encode_x``): a pair of (M, d) tensors."""
        left_views, right, _ = self._encode_bank(index)
        return left_views[0], right

    # -- internals -------------------------------------------------------------------------

    def _encode_queries(self, a):
        left = self._hops[0]
        if len(left) > 1:
            if not isinstance(a, (list, tuple)) or len(a) != len(left):
                raise ValueError(
                    f"this bridge fuses {len(left)} modalities: pass a tuple of "
                    f"{len(left)} query tensors"
                )
        else:
            a = (a,)
        encoded = []
        for j, (critic, x) in enumerate(zip(left, a, strict=True)):
            u = critic.encode_x(x)
            if u.dim() != 2 or u.shape[0] == 0:
                raise ValueError(
                    f"a[{j}] must be a non-empty batch of queries, encoded to "
                    f"(N, d); got {tuple(u.shape)}"
                )
            encoded.append(u)
        if len({u.shape[0] for u in encoded}) > 1:
            raise ValueError("fused query tensors have different numbers of rows")
        return encoded

    def _encode_candidates(self, c):
        v = self._hops[-1][0].encode_y(c)
        if v.dim() != 2 or v.shape[0] == 0:
            raise ValueError(
                f"c must be a non-empty batch of candidates, encoded to (K, d); "
                f"got {tuple(v.shape)}"
            )
        return v

    def _encode_bank(self, index):
        views = self.banks[index].materialize()
        weights = self.banks[index].log_weights
        left = [
            c.encode_y(views[j if len(views) > 1 else 0]) for j, c in enumerate(self._hops[index])
        ]
        right = self._hops[index + 1][0].encode_x(views[-1])
        return left, right, weights

    def _three_chain(self, queries, candidates, targets, method):
        bank = self.banks[0]
        kwargs = dict(
            left=self._hops[0],
            right=self._hops[1][0],
            queries=queries,
            candidates=candidates,
            targets=targets,
            method=method,
        )
        if bank.kind == "dask":
            from pyro_contrast.marginals.distributed import logsumexp_reduce_blocks

            if bank.log_weights is not None:
                raise ValueError("log_weights are not supported for dask banks")
            arrays = [bank.view(j) for j in range(bank.num_views)]

            def fn(*blocks):
                return chain.three_chain_partials(*blocks, None, **kwargs)

            numerator, denominator = logsumexp_reduce_blocks(arrays, fn)
            return numerator - denominator.unsqueeze(-1)
        numerator = denominator = None
        chunks = bank.chunks(self.chunk_size)
        if bank.kind != "tensor":
            chunks = tqdm(chunks, desc="bank chunks", disable=None if self.progress else True)
        cache = self._normalizer_cache(bank, targets, method)
        dtype = torch.promote_types(queries[0].dtype, candidates.dtype)
        accumulate = torch.float64 if bank.kind != "tensor" or len(bank) > 65536 else dtype
        for start, chunk in zip(
            range(0, 2**62, self.chunk_size or DEFAULT_CHUNK_SIZE), chunks, strict=False
        ):
            log_z = None
            if cache is not None:
                key = (start, chunk[0].shape[0])
                if key not in cache:
                    right = kwargs["right"]
                    cache[key] = chain.log_normalizer(right, right.encode_x(chunk[-2]), targets)
                log_z = cache[key]
            num, den = chain.three_chain_partials(*chunk, log_z=log_z, **kwargs)
            # Hundreds of chunks accumulate float32 rounding; sum the partials in float64.
            num, den = num.to(accumulate), den.to(accumulate)
            if numerator is None:
                numerator, denominator = num, den
            else:
                numerator = torch.logaddexp(numerator, num)
                denominator = torch.logaddexp(denominator, den)
        return (numerator - denominator.unsqueeze(-1)).to(dtype)

    def _frozen_state(self, critic):
        # A key for results that depend only on ``critic`` and the target bank: the version
        # counters of their tensors, so an optimizer step or any in-place edit invalidates it.
        # None while gradients may be needed (nothing is cached then).
        tensors = list(critic.parameters()) + list(critic.buffers())
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return None
        state = tuple((id(t), t._version) for t in tensors)
        return state + ((id(self.target_bank), self.target_bank._version),)

    def _encoded_targets(self):
        """The target bank as embedded by the last critic, reused while nothing changed."""
        if self.target_bank is None:
            return None
        last = self._hops[-1][0]
        state = self._frozen_state(last)
        if state is None or state != self._targets_state:
            self._targets = last.encode_y(self.target_bank)
            self._targets_state = state
        return self._targets

    def _normalizer_cache(self, bank, targets, method):
        # log Z(b_m) over a target bank does not depend on the queries, so repeated calls (one
        # per batch of queries) reuse it, under the same key as the encoded targets.
        if method != "exact" or targets is None or bank.kind not in ("tensor", "array"):
            return None
        state = self._frozen_state(self._hops[1][0])
        if state is None:
            return None
        state += (self.chunk_size,)
        if self._cache_state != state:
            self._cache_state, self._cache = state, {}
        return self._cache

    def _long_chain(self, queries, candidates, targets, method):
        encoded = [self._encode_bank(i) for i in range(len(self.banks))]
        exact = method == "exact"
        alpha = chain.forward_messages(self._hops, queries, encoded, normalized=exact)[-1]
        last = self._hops[-1][0]
        right = encoded[-1][1]
        scores = last.pairwise_embeddings(right, candidates)
        if exact:
            norm = candidates if targets is None else targets
            return logmatmul(alpha, scores - chain.log_normalizer(last, right, norm).unsqueeze(-1))
        log_total = 0.0
        for bank in self.banks:
            w = bank.log_weights
            log_total += math.log(len(bank)) if w is None else torch.logsumexp(w, 0).item()
        return logmatmul(alpha, scores) - log_total

    def _direct(self, queries, candidates):
        first, last = self._hops[0], self._hops[-1][0]
        similarity = first[0].similarity
        if any(c.similarity != similarity for hop in self._hops for c in hop):
            raise ValueError("method='direct' needs all critics to share one similarity")
        temperature = (
            self.direct_temperature
            if self.direct_temperature is not None
            else first[0].temperature.item()
        )
        if similarity == "bilinear":
            if len(self._hops) != 2:
                raise ValueError("bilinear 'direct' is defined for three-modality chains only")
            weights = [c.weight @ last.weight for c in first]
            shortcut = Critic.from_embeddings("dot", temperature).pairwise_embeddings
            return sum(
                shortcut(u @ w.to(u.dtype), candidates)
                for u, w in zip(queries, weights, strict=True)
            )
        shortcut = Critic.from_embeddings(similarity, temperature)
        for u in queries:
            if u.shape[-1] != candidates.shape[-1]:
                raise ValueError(
                    f"method='direct' compares A and C embeddings, but their dims differ "
                    f"({u.shape[-1]} vs {candidates.shape[-1]})"
                )
        return sum(shortcut.pairwise_embeddings(u, candidates) for u in queries)

    def _analytic(self, a, c):
        if len(self._hops) != 2 or len(self._hops[0]) != 1:
            raise ValueError("method='analytic' is defined for a three-modality chain A – B – C")
        if self.marginal is None:
            raise ValueError(
                "method='analytic' needs Bridge(..., marginal='sphere' | 'gaussian' | distribution)"
            )
        critics = (self._hops[0][0], self._hops[1][0])
        if self._resolved_marginal is None:
            z_left, z_right = self.embed_bank(0)
            if z_left.shape != z_right.shape or not torch.allclose(z_left, z_right):
                raise ValueError(
                    "method='analytic' needs both critics to embed the bank "
                    "identically (a shared B representation)"
                )
            marginal = resolve_marginal(self.marginal, z_left, critics=critics)
            # The C normalizer: a Gaussian fitted to target_bank makes 'analytic' the large-bank
            # limit of 'exact'; without it (or on the sphere) Z_C is taken as constant.
            target = None
            if self.target_bank is not None and isinstance(marginal, MultivariateNormal):
                target = resolve_marginal("gaussian", self._encoded_targets())
            self._resolved_marginal = (marginal, target)
        marginal, target = self._resolved_marginal
        return analytic_log_ratio(*critics, a, c, marginal, target=target)
