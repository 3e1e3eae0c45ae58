import os

import numpy as np
import pyro
import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite is dominated by small tensor ops, for which a second OpenMP thread only adds
# synchronization (up to 80x slower on a shared 2-core machine); benchmarks set their own.
torch.set_num_threads(1)

# Property tests: a small profile in CI (the whole suite stays under 15 minutes on 2 cores), a
# thorough one for local hunting (HYPOTHESIS_PROFILE=dev). No deadline: a shared CI machine
# makes timings noisy, and a slow example is not a wrong one.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=25, derandomize=True, **_common)
settings.register_profile("dev", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed_and_validate():
    """Seed every test and run it with Pyro/torch distribution validation on."""
    pyro.set_rng_seed(0)
    np.random.seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    torch.set_default_dtype(torch.float32)
    yield
    pyro.enable_validation(True)
