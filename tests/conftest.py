import os

import numpy as np
import pyro
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite is dominated by small tensor ops, for which a second OpenMP thread only adds
# synchronization (up to 80x slower on a shared 2-core machine); benchmarks set their own.
torch.set_num_threads(1)


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
