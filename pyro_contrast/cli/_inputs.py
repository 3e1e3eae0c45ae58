"""The inputs of a bridge study: embedding files → critics, bank, bridge; methods → scores.

Shared by ``bridge`` (which reads the files a user gives), ``diagnose`` (which reads them
again from a study's ``study.json``) and ``demo`` (which writes its scenes' embeddings as the
same files and reads them back through the same code).
"""

import contextlib
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from pyro_contrast.cli._common import FEW_NORMALIZER_ITEMS, UsageError
from pyro_contrast.critics import Critic
from pyro_contrast.marginals.bank import Bank
from pyro_contrast.marginals.bridge import Bridge, SmallNormalizerWarning
from pyro_contrast.studies.io import read_embedding_file
from pyro_contrast.studies.metrics import grouped_candidates

SIMILARITIES = ("cosine", "dot", "neg_sq_l2")
METHODS = ("exact", "lse", "direct", "analytic")
MARGINALS = ("sphere", "gaussian")


@dataclass
class Inputs:
    """Embeddings of one study, as tensors, with where each came from."""

    queries: torch.Tensor
    bank_ab: torch.Tensor
    bank_bc: torch.Tensor
    candidates: torch.Tensor
    c_bank: torch.Tensor | None
    files: dict
    temperatures: dict = field(default_factory=dict)  # name -> (value, source)

    @property
    def shared_space(self):
        """Whether the queries and candidates can be compared directly (equal dimensions)."""
        return self.queries.shape[1] == self.candidates.shape[1]

    @property
    def shared_bank(self):
        """Whether both critics see the bank identically (one B representation)."""
        return self.bank_ab.shape == self.bank_bc.shape and bool(
            torch.equal(self.bank_ab, self.bank_bc)
        )


def read_inputs(queries, bank, candidates, c_bank=None):
    """Read the embedding files of a study and check they fit together."""
    files = {
        name: read_embedding_file(path)
        for name, path in (("queries", queries), ("bank", bank), ("candidates", candidates))
    }
    bank_ab = files["bank"].embeddings("ab", name=f"{bank}[ab]")
    bank_bc = files["bank"].embeddings("bc", name=f"{bank}[bc]")
    if bank_ab.shape[0] != bank_bc.shape[0]:
        raise UsageError(
            f"{bank}: 'ab' has {bank_ab.shape[0]} rows but 'bc' has "
            f"{bank_bc.shape[0]}; both must embed the same bank items"
        )
    a = files["queries"].embeddings(dim=bank_ab.shape[1], name=queries)
    c = files["candidates"].embeddings(dim=bank_bc.shape[1], name=candidates)
    target = None
    if c_bank is not None:
        files["c_bank"] = read_embedding_file(c_bank)
        target = files["c_bank"].embeddings(dim=bank_bc.shape[1], name=c_bank)
    return Inputs(a, bank_ab, bank_bc, c, target, files)


def resolve_temperatures(inputs, temperature_ab=None, temperature_bc=None):
    """Each critic's temperature: the command line, else the files, else 1 (flagged)."""
    files = inputs.files
    sources = {
        "ab": (
            temperature_ab,
            "--temperature-ab",
            [
                ("bank file", files["bank"], "temperature_ab"),
                ("query file", files["queries"], "temperature"),
            ],
        ),
        "bc": (
            temperature_bc,
            "--temperature-bc",
            [
                ("bank file", files["bank"], "temperature_bc"),
                ("candidate file", files["candidates"], "temperature"),
            ],
        ),
    }
    for name, (flag, flag_name, found) in sources.items():
        inputs.temperatures[name] = _temperature(flag, flag_name, found)
    return inputs.temperatures


def _temperature(flag, flag_name, sources):
    if flag is not None:
        if not flag > 0:
            raise UsageError(f"{flag_name} must be positive, got {flag}")
        return flag, "command line"
    for where, data, key in sources:
        value = data.scalar(key)
        if value is not None:
            if not (np.isfinite(value) and value > 0):
                raise UsageError(f"{data.path}: {key} must be positive, got {value}")
            return value, f"{key} in {where}"
    return 1.0, "default"


def build_bridge(inputs, similarity, *, direct_temperature=None, marginal=None):
    """The A – B – C bridge of two embedding-space critics over the bank's two views."""
    t_ab, t_bc = inputs.temperatures["ab"][0], inputs.temperatures["bc"][0]
    if direct_temperature is not None and not direct_temperature > 0:
        raise UsageError(f"--direct-temperature must be positive, got {direct_temperature}")
    views = (inputs.bank_ab,) if inputs.shared_bank else (inputs.bank_ab, inputs.bank_bc)
    return Bridge(
        [Critic.from_embeddings(similarity, t_ab), Critic.from_embeddings(similarity, t_bc)],
        [Bank(views=views)],
        marginal=marginal,
        target_bank=inputs.c_bank,
        direct_temperature=direct_temperature,
        progress=False,
    )


def inapplicable(method, inputs, similarity, marginal):
    """Why ``method`` cannot run on these inputs (``None`` when it can)."""
    if method == "direct" and not inputs.shared_space:
        return (
            f"queries ({inputs.queries.shape[1]}-d) and candidates "
            f"({inputs.candidates.shape[1]}-d) live in different spaces"
        )
    if method == "analytic":
        if marginal is None:
            return "needs an assumed bank marginal: --marginal sphere|gaussian"
        if not inputs.shared_bank:
            return "needs both models to embed the bank identically (one B representation)"
        if marginal == "sphere" and similarity != "cosine":
            return f"the sphere marginal has a closed form for cosine critics, not {similarity}"
        if marginal == "gaussian" and similarity == "cosine":
            return "the Gaussian marginal has no closed form for cosine critics"
    return None


def select_methods(text, inputs, similarity, marginal):
    """``(methods, skipped)`` for a ``--method`` value; ``None`` or ``all`` runs every method
    that applies and names the others with the reason; an explicit method that cannot run
    is an error."""
    if text is None or text.strip() == "all":
        methods, skipped = [], {}
        for method in METHODS:
            reason = inapplicable(method, inputs, similarity, marginal)
            if reason is None:
                methods.append(method)
            else:
                skipped[method] = reason
        return methods, skipped
    requested = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in requested if m not in METHODS]
    if unknown or not requested:
        raise UsageError(
            f"--method: unknown {unknown or text!r}; choose from {','.join(METHODS)} or all"
        )
    for method in requested:
        reason = inapplicable(method, inputs, similarity, marginal)
        if reason is not None:
            raise UsageError(f"--method {method}: {reason}")
    return list(dict.fromkeys(requested)), {}


def normalizer_note(num_candidates, c_bank_size=None, flag="--c-bank"):
    """A notice when the exact bridge's C normalizer rests on fewer than a few hundred items
    (``None`` otherwise): ``c_bank_size`` C items, or else the ``num_candidates``."""
    if c_bank_size is not None:
        if c_bank_size >= FEW_NORMALIZER_ITEMS:
            return None
        return (
            f"note: the C bank has only {c_bank_size} items ({flag}); exact's C normalizer is "
            f"noisy below a few hundred ({FEW_NORMALIZER_ITEMS} or more recommended)"
        )
    if num_candidates >= FEW_NORMALIZER_ITEMS:
        return None
    return (
        f"note: exact normalizes C over the {num_candidates} candidates only; pass {flag} FILE "
        "with a few hundred or more C embeddings for a stable normalizer"
    )


def _c_bank_size(inputs):
    return None if inputs.c_bank is None else inputs.c_bank.shape[0]


def study_normalizer_note(inputs, group_size=None):
    """:func:`normalizer_note` for a study's inputs."""
    return normalizer_note(group_size or inputs.candidates.shape[0], _c_bank_size(inputs))


def score(bridge, queries, candidates, methods, group_size=None):
    """``{method: (N, K) float64 array}``; with ``group_size`` each query is scored against
    the candidates of its own group of ``group_size`` (aligned files, as in Che & Eysenbach's
    evaluation), otherwise against all candidates."""
    scores = {}
    with torch.no_grad(), quiet_normalizer():
        for method in methods:
            if group_size is None:
                scores[method] = bridge.log_ratio(queries, candidates, method=method)
            else:
                blocks = [
                    bridge.log_ratio(
                        queries[start : start + group_size],
                        candidates[start : start + group_size],
                        method=method,
                    )
                    for start in range(0, queries.shape[0], group_size)
                ]
                scores[method] = torch.cat(blocks)
            scores[method] = scores[method].double().numpy()
    return scores


@contextlib.contextmanager
def quiet_normalizer():
    """Silence the library's few-items warning: the commands print :func:`normalizer_note`,
    which names their own flag (``--c-bank``), once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallNormalizerWarning)
        yield


def check_groups(inputs, group_size):
    if group_size is None:
        return
    num_queries, num_candidates = inputs.queries.shape[0], inputs.candidates.shape[0]
    if num_queries != num_candidates:
        raise UsageError(
            f"--group-size needs aligned files (as many queries as candidates), got "
            f"{num_queries} and {num_candidates}"
        )
    if group_size < 2 or num_queries % group_size:
        raise UsageError(
            f"--group-size {group_size} must be at least 2 and divide the {num_queries} queries"
        )


def grouped(matrix, group_size):
    """A full (N, N) matrix (e.g. the truth) cut to each query's own group: (N, group_size)."""
    return matrix if group_size is None else grouped_candidates(matrix, group_size)


def resolve(path, folder):
    """A path recorded in a study: absolute as given, relative to the study folder."""
    return path if os.path.isabs(path) else os.path.join(folder, path)
