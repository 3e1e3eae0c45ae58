"""Root pytest configuration: every doctest starts from the same random state.

Doctests in ``pyro_contrast`` draw samples; without a seed their output depends on which
doctests ran before them. ``PYRO_CONTRAST_DOCTEST_SEED`` (default 0) lets a maintainer rerun
them under other seeds to check that no doctest relies on a lucky draw.
"""

import os

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _seed_doctests(request):
    if isinstance(request.node, DoctestItem):
        import pyro

        pyro.set_rng_seed(int(os.environ.get("PYRO_CONTRAST_DOCTEST_SEED", "0")))
    yield
