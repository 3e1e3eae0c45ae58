r"""Result objects shared by the diagnostic tests, and their input checks."""

import math
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from scipy import stats

from pyro_contrast._validation import as_float_tensor, check_finite

COMBINE_METHODS = ("bonferroni", "fisher")


@dataclass(frozen=True, kw_only=True, repr=False)
class DiagnosticResult:
    r"""Outcome of one hypothesis test, following SciPy's ``statistic``/``p_value`` convention.

    A combined test (e.g. :func:`~pyro_contrast.diagnostics.sphere_uniformity`) holds its
    components in ``tests``; a single test has ``tests`` empty.

    :param str name: what was tested.
    :param float statistic: the test statistic.
    :param float p_value: probability, under the null hypothesis, of a statistic at least as
        extreme (small values reject).
    :param float dof: degrees of freedom of the reference distribution, if it has any.
    :param tests: component results by name (read-only mapping).
    :param tuple notes: remarks on how the input was treated (e.g. normalized rows).
    :param details: extra named quantities (e.g. canonical correlations).

    >>> r = DiagnosticResult(name="demo", statistic=1.0, p_value=0.3)
    >>> r.rejects(0.05)
    False
    """

    name: str
    statistic: float
    p_value: float
    dof: float | None = None
    tests: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple = ()
    details: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self):
        for name in ("tests", "details"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    def rejects(self, alpha=0.05):
        """Whether the null hypothesis is rejected at level ``alpha`` (``p_value <= alpha``)."""
        _check_alpha(alpha)
        return bool(self.p_value <= alpha)

    def __repr__(self):
        parts = [f"statistic={self.statistic:.6g}", f"p_value={self.p_value:.4g}"]
        if self.dof is not None:
            parts.append(f"dof={self.dof:g}")
        if "combine" in self.details:
            parts.append(f"combine={self.details['combine']!r}")
        text = f"{self.name}({', '.join(parts)})"
        for name, test in self.tests.items():
            text += "\n  " + f"{name}: {test!r}".replace("\n", "\n  ")
        for note in self.notes:
            text += f"\n  note: {note}"
        return text


def combine_tests(name, tests, method="bonferroni", notes=()):
    r"""Combine independent-ish component tests into one decision.

    ``"bonferroni"``: :math:`p = \min(1, k \min_i p_i)`, valid whatever the dependence; the
    statistic is :math:`\min_i p_i` (Tippett's). ``"fisher"``: :math:`-2 \sum_i \log p_i \sim
    \chi^2_{2k}`, valid when the components are independent under the null.
    """
    if method not in COMBINE_METHODS:
        raise ValueError(f"combine must be one of {COMBINE_METHODS}, got {method!r}")
    p_values = [t.p_value for t in tests.values()]
    if method == "bonferroni":
        statistic = min(p_values)
        p_value, dof = min(1.0, len(p_values) * statistic), None
    else:
        # p = 0 would make the sum infinite: the smallest double keeps it finite and decisive
        statistic = -2.0 * sum(math.log(max(p, 1e-300)) for p in p_values)
        dof = 2 * len(p_values)
        p_value = float(stats.chi2.sf(statistic, dof))
    return DiagnosticResult(
        name=name,
        statistic=float(statistic),
        p_value=float(p_value),
        dof=dof,
        tests=tests,
        notes=tuple(notes),
        details={"combine": method},
    )


def as_matrix(value, name, *, min_rows=2, min_cols=1):
    """A finite float64 (n, d) tensor; 1-D input is read as one column."""
    value = check_finite(as_float_tensor(value, name), name).detach()
    if value.dim() == 1:
        value = value.unsqueeze(-1)
    if value.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got {tuple(value.shape)}")
    if value.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {value.shape[0]}")
    if value.shape[1] < min_cols:
        raise ValueError(f"{name} needs at least {min_cols} columns, got {value.shape[1]}")
    return value.to(torch.float64)


def check_count(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_probability(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def _check_alpha(alpha):
    return check_probability(alpha, "alpha")


def make_generator(generator):
    """A ``torch.Generator``: the given one, or a fresh one seeded from torch's global RNG."""
    if generator is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        return torch.Generator().manual_seed(seed)
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, got {generator!r}"
        )
    return generator
