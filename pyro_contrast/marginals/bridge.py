r"""The bridge: compare two modalities that were never paired, through one or more others."""

import math
import numbers
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.critics import Critic
from pyro_contrast.distributions.bridged_conditional import BridgedConditional
from pyro_contrast.marginals import chain
from pyro_contrast.marginals._inputs import encode_candidates, encode_queries
from pyro_contrast.marginals._memo import CappedStore, Memo, Untrackable, module_state, needs_graph
from pyro_contrast.marginals.analytic import analytic_log_ratio, bank_marginals
from pyro_contrast.marginals.bank import DEFAULT_CHUNK_SIZE, Bank
from pyro_contrast.marginals.shortcut import direct_log_ratio

# A bridge keeps the bank's encodings and GEMM factors between calls up to this many elements
# beyond the bank itself (256 MB in float32).
_MAX_FACTOR_ELEMENTS = 2**26
METHODS = ("exact", "lse", "direct", "analytic")

#: Below this many items the C normalizer :math:`Z(b)` is a noisy estimate (with 32
#: candidates as normalizer, exact top-1 fell from 88% to 60% on Che & Eysenbach's data).
MIN_NORMALIZER_ITEMS = 256


class SmallNormalizerWarning(UserWarning):
    """The exact method's C normalizer is estimated from few items: pass ``target_bank``."""


class Bridge(nn.Module):
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

    A bridge is a ``torch.nn.Module``: its critics are submodules and its banks (and
    ``target_bank``) buffers, so it moves with ``.to()``, saves with ``state_dict`` and
    registers with ``pyro.module``. What it derives from them (the encoded target bank, the
    bank as the critics encode it and its GEMM factors, the C normalizer of each bank chunk,
    a fitted marginal) is reused only while every tensor it came from is unchanged (same
    object, same version), the critics hold the same submodules and similarity, and the
    settings are the same; never while gradients may be needed, nor through dropout or
    batch norm in training mode. So an answer always equals a freshly built bridge's, and a
    second call runs learned encoders on the queries and candidates only. ``exact`` warns
    (:class:`SmallNormalizerWarning`) when the C normalizer is estimated from fewer than
    ``MIN_NORMALIZER_ITEMS`` items: pass ``target_bank``.

    Speed: a chain A – B – C with the library's own critics and no gradient wanted is computed
    in one streamed pass over the bank: blocks of scores go through their normalizer and
    exponentials while in cache and into the contraction, so no score matrix of the bank is
    formed and ``"exact"`` costs about two GEMMs of its (N x M) @ (M x K) size; cells the
    float32 fast path cannot certify (scores hundreds of nats apart) are recomputed by
    :func:`~pyro_contrast.ops.logmatmul`'s exact tiers. With gradients, longer chains, hubs
    or critic subclasses the score matrices are formed chunk by chunk and contracted by
    ``logmatmul``; the answers agree to float rounding.

    >>> ab = Critic.from_embeddings("cosine", temperature=0.2)
    >>> bc = Critic.from_embeddings("cosine", temperature=0.2)
    >>> bridge = Bridge([ab, bc], [Bank(torch.randn(64, 8))], target_bank=torch.randn(256, 8))
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
        super().__init__()
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
        self.hops = nn.ModuleList(nn.ModuleList(hop) for hop in hops)
        self.banks = nn.ModuleList(b if isinstance(b, Bank) else Bank(b) for b in banks)
        for i, bank in enumerate(self.banks):
            bank.check_views(len(hops[i]) + 1)
            if len(self.banks) > 1 and bank.kind == "dask":
                raise ValueError("dask banks are supported for three-modality chains only")
        if target_bank is not None:
            target_bank = check_finite(as_float_tensor(target_bank, "target_bank"), "target_bank")
            if target_bank.dim() < 1 or target_bank.shape[0] == 0:
                raise ValueError(
                    f"target_bank must be a non-empty batch of C items, got shape "
                    f"{tuple(target_bank.shape)}"
                )
        self.register_buffer("target_bank", target_bank)
        self.marginal = marginal
        if direct_temperature is not None and not (
            isinstance(direct_temperature, numbers.Real)
            and math.isfinite(direct_temperature)
            and direct_temperature > 0
        ):
            raise ValueError(
                f"direct_temperature must be positive and finite, got {direct_temperature!r}"
            )
        self.direct_temperature = direct_temperature
        self.chunk_size = chunk_size
        self.progress = progress
        self._memo = Memo()

    @property
    def chunk_size(self):
        """Bank rows per streamed chunk (``None``: the default)."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value):
        if value is not None and (
            not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer or None, got {value!r}")
        self._chunk_size = None if value is None else int(value)

    @property
    def critics(self):
        """The critics along the chain (a tuple for a fusion hub), as passed in."""
        return [tuple(hop) if len(hop) > 1 else hop[0] for hop in self.hops]

    @property
    def _hops(self):
        return [tuple(hop) for hop in self.hops]

    def extra_repr(self):
        return f"num_banks={len(self.banks)}, target_bank={self.target_bank is not None}"

    def clear_cache(self):
        """Drop every derived value: needed only after writes the version counters do not
        see (through ``tensor.data``, or a NumPy array sharing a tensor's memory)."""
        self._memo.clear()

    def forward(self, a, c, method="exact"):
        """Same as :meth:`log_ratio`."""
        return self.log_ratio(a, c, method)

    def log_ratio(self, a, c, method="exact"):
        r"""Estimates of :math:`\log p(c_k \mid a_n) - \log p(c_k)` for all pairs, (N, K)."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        queries = encode_queries(self._hops[0], a)
        candidates = encode_candidates(self._hops[-1][0], c)
        if method == "direct":
            return direct_log_ratio(self._hops, queries, candidates, self.direct_temperature)
        if method == "analytic":
            return self._analytic(a, c)
        targets = self._encoded_targets(candidates)
        if method == "exact":
            self._warn_small_normalizer(candidates if targets is None else targets)
        if len(self.banks) == 1:
            return self._three_chain(queries, candidates, targets, method)
        encoded = [self._encode_bank(i) for i in range(len(self.banks))]
        return chain.long_chain_log_ratio(self._hops, queries, encoded, candidates, targets, method)

    def conditional(self, a, candidates, method="exact"):
        """The Pyro distribution over candidate indices given queries ``a`` (batch ``a``'s
        leading shape): a :class:`~pyro_contrast.BridgedConditional` whose logits are
        :meth:`log_ratio`."""
        fused = isinstance(a, (tuple, list))
        first = a[0] if fused else a
        if not isinstance(first, torch.Tensor) or first.dim() < 1:
            raise ValueError("a must be a tensor (or tuple of tensors) of shape (..., d)")
        batch_shape = first.shape[:-1]
        # Queries with several leading dims (nested plates) are scored as one flat batch.
        if fused:
            flat = tuple(x.reshape(-1, x.shape[-1]) for x in a)
        else:
            flat = a.reshape(-1, a.shape[-1])
        logits = self.log_ratio(flat, candidates, method=method)
        return BridgedConditional(logits=logits.reshape(batch_shape + logits.shape[-1:]))

    def explain(self, a, c, *, bank_index=0):
        r"""Posterior :math:`p(b_m \mid a_n, c_n)` over bank ``bank_index`` for aligned pairs,
        (N, M). The C normalizer is over the rows of ``c`` (or ``target_bank``)."""
        bank_index = self._check_bank_index(bank_index, "bank_index")
        queries = encode_queries(self._hops[0], a)
        targets_c = encode_candidates(self._hops[-1][0], c)
        if targets_c.shape[0] != queries[0].shape[0]:
            raise ValueError(
                f"explain needs aligned pairs: a has {queries[0].shape[0]} rows, c has "
                f"{targets_c.shape[0]}"
            )
        targets = self._encoded_targets(targets_c)
        norm = targets_c if targets is None else targets
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
        index = self._check_bank_index(index, "index")
        left_views, right, _ = self._encode_bank(index)
        return left_views[0], right

    # -- internals -------------------------------------------------------------------------

    def _check_bank_index(self, index, name):
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"{name} must be an integer, got {index!r}")
        if not 0 <= index < len(self.banks):
            raise ValueError(
                f"{name} must be in [0, {len(self.banks)}) for a bridge of "
                f"{len(self.banks)} bank(s), got {index}"
            )
        return int(index)

    def _warn_small_normalizer(self, normalizer):
        if normalizer.shape[0] < MIN_NORMALIZER_ITEMS:
            source = "the candidates" if self.target_bank is None else "target_bank"
            warnings.warn(
                f"the exact bridge's C normalizer Z(b) is estimated from {source}, only "
                f"{normalizer.shape[0]} items (< {MIN_NORMALIZER_ITEMS}): a noisy estimate. "
                "Pass target_bank= with hundreds to thousands of C samples",
                SmallNormalizerWarning,
                stacklevel=3,
            )

    def _encode_bank(self, index):
        views = self.banks[index].materialize()
        weights = self.banks[index].log_weights
        left, right = chain.encode_chunk(self._hops[index], self._hops[index + 1][0], views)
        return left, right, weights

    def _cached(self, name, compute, *, critics, tensors=(), objects=(), settings=()):
        """``compute()`` through the memo, keyed on the critics' state and the inputs."""
        try:
            states = [module_state(c) for c in critics]
        except Untrackable:
            return compute()
        critic_tensors = tuple(t for tensors_, _ in states for t in tensors_)
        flags = tuple(flag for _, flags in states for flag in flags)
        return self._memo.get(
            name,
            compute,
            tensors=critic_tensors + tuple(tensors),
            objects=tuple(critics) + tuple(objects),
            settings=(flags, *settings),
        )

    def _encoded_targets(self, candidates):
        """The target bank as embedded by the last critic (None without a target bank)."""
        if self.target_bank is None:
            return None
        last = self._hops[-1][0]
        targets = self._cached(
            "targets",
            lambda: last.encode_y(self.target_bank),
            critics=(last,),
            tensors=(self.target_bank,),
        )
        if targets.dim() != 2 or targets.shape[-1] != candidates.shape[-1]:
            raise ValueError(
                f"target_bank must encode like the candidates, to (T, {candidates.shape[-1]}); "
                f"got {tuple(targets.shape)} from target_bank of shape "
                f"{tuple(self.target_bank.shape)}"
            )
        return targets

    def _three_chain(self, queries, candidates, targets, method):
        bank = self.banks[0]
        left, right = self._hops[0], self._hops[1][0]
        kwargs = dict(
            left=left,
            right=right,
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
        chunk_size = self.chunk_size or DEFAULT_CHUNK_SIZE
        chunks = bank.chunks(chunk_size)
        if bank.kind != "tensor":
            chunks = tqdm(chunks, desc="bank chunks", disable=None if self.progress else True)
        normalizers = self._normalizer_store(bank, targets, method)
        dtype = torch.promote_types(queries[0].dtype, candidates.dtype)
        accumulate = torch.float64 if bank.kind != "tensor" or len(bank) > 65536 else dtype
        # The streamed pass runs without gradients only: no bank factors are made for it
        # otherwise (they would be thrown away).
        fused = chain.fusable(left, right) and not needs_graph(
            *queries,
            candidates,
            targets,
            bank.log_weights,
            *(p for critic in left for p in critic.parameters()),
            *right.parameters(),
            *(bank.view(j) for j in range(bank.num_views) if bank.kind == "tensor"),
        )
        store = self._bank_store(bank, queries[0], candidates)
        for start, chunk in zip(range(0, 2**62, chunk_size), chunks, strict=False):
            *views, log_weights = chunk
            key = (start, views[0].shape[0])
            entry = None if store is None else store.get(key)
            if entry is not None:
                # encoded by an earlier call, and nothing the encoding depends on changed
                bank_left, bank_right, bank_factors = entry
            else:
                # Each chunk is encoded once: its normalizer and partials share the encoding.
                bank_left, bank_right = chain.encode_chunk(left, right, views)
                bank_factors = None
            if store is not None and (entry is None or (fused and bank_factors is None)):
                if fused:
                    # in the dtype the streamed pass scores in (the encoders may widen it)
                    dtype = chain.score_dtype(queries[0], bank_left[0])
                    bank_factors = chain.bank_factors(left, right, bank_left, bank_right, dtype)
                store.put(key, (bank_left, bank_right, bank_factors), views)
            log_z = None
            if normalizers is not None:
                if key not in normalizers:
                    normalizers[key] = chain.log_normalizer(right, bank_right, targets)
                log_z = normalizers[key]
            # One streamed pass where the fast path certifies every cell; logmatmul's exact
            # tiers otherwise (and for the rest of the bank, which is likely alike).
            partials, fused = chain.chunk_partials(
                bank_left,
                bank_right,
                log_weights,
                fused=fused,
                bank_factors=bank_factors,
                log_z=log_z,
                **kwargs,
            )
            num, den = partials
            # Hundreds of chunks accumulate float32 rounding; sum the partials in float64.
            num, den = num.to(accumulate), den.to(accumulate)
            if numerator is None:
                numerator, denominator = num, den
            else:
                numerator = torch.logaddexp(numerator, num)
                denominator = torch.logaddexp(denominator, den)
        return (numerator - denominator.unsqueeze(-1)).to(dtype)

    def _normalizer_store(self, bank, targets, method):
        # log Z(b_m) over a target bank does not depend on the queries, so repeated calls (one
        # per batch of queries) reuse it: a dict of chunk -> log Z, valid while the B-C
        # critic, the bank's views and the target bank are unchanged. Banks outside memory
        # (arrays, iterables) have no version to compare, so their normalizers are recomputed.
        if method != "exact" or targets is None or bank.kind != "tensor":
            return None
        right = self._hops[1][0]
        return self._cached(
            "normalizers",
            dict,
            critics=(right,),
            tensors=(bank.view(bank.num_views - 1), self.target_bank),
            objects=(bank,),
            settings=(self.chunk_size,),
        )

    def _bank_store(self, bank, query, candidates):
        # The bank as the critics encode it, and its GEMM factors (normalized, augmented,
        # times a bilinear weight), depend on the critics and the bank, not on the queries:
        # kept per chunk, keyed on the critics' state, the bank's views and the dtype, so a
        # second call encodes nothing (with learned encoders, most of a call's time). Only
        # for in-memory banks, up to _MAX_FACTOR_ELEMENTS, and only where the memo keeps it:
        # a store made for one call would hold every chunk's encodings to no purpose.
        if bank.kind != "tensor":
            return None
        left, right = self._hops[0], self._hops[1][0]  # a hub has several left critics
        views = tuple(bank.view(j) for j in range(bank.num_views))
        store = self._cached(
            "bank_factors",
            lambda: CappedStore(_MAX_FACTOR_ELEMENTS),
            critics=(*left, right),
            tensors=views,
            objects=(bank,),
            settings=(
                self.chunk_size,
                chain.score_dtype(query, candidates, views[0]),
                _MAX_FACTOR_ELEMENTS,
            ),
        )
        return store if self._memo.holds("bank_factors", store) and not store.full else None

    def _analytic(self, a, c):
        if len(self._hops) != 2 or len(self._hops[0]) != 1:
            raise ValueError("method='analytic' is defined for a three-modality chain A – B – C")
        if self.marginal is None:
            raise ValueError(
                "method='analytic' needs Bridge(..., marginal='sphere' | 'gaussian' | distribution)"
            )
        critics = (self._hops[0][0], self._hops[1][0])
        bank = self.banks[0]
        bank_tensors = (
            tuple(bank.view(j) for j in range(bank.num_views)) if bank.kind == "tensor" else ()
        )

        def resolve():
            z_left, z_right = self.embed_bank(0)
            return bank_marginals(critics, z_left, z_right, self.marginal, self.target_bank)

        if bank.kind == "tensor":
            marginal, target = self._cached(
                "marginal",
                resolve,
                critics=critics,
                tensors=bank_tensors + (self.target_bank,),
                objects=(bank, self.marginal),
                settings=(),
            )
        else:
            marginal, target = resolve()
        return analytic_log_ratio(*critics, a, c, marginal, target=target)
