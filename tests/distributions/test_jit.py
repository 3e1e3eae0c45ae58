"""The distributions trace under ``JitTrace_ELBO`` / ``JitTraceEnum_ELBO`` without warnings.

Pyro's JIT ELBOs run the model under ``torch.jit.trace`` with validation off (data checks
would be Python branches on traced values). Pyro and torch themselves emit ``TracerWarning``s
(plates, ``broadcast_all``); we record every warning and require none to come from this
package.
"""

import os
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, JitTraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoNormal

import pyro_contrast as pc
from pyro_contrast.distributions import (
    BridgedConditional,
    ContrastiveConditional,
    SphereReparam,
    TiltedConditional,
    UniformSphere,
    VonMisesFisher,
    contrastive_factor,
)

_PACKAGE = os.path.dirname(pc.__file__)
_DISTRIBUTIONS = os.path.join(_PACKAGE, "distributions")
_CRITIC = pc.Critic.from_embeddings("cosine", temperature=0.5)
_L2 = pc.Critic.from_embeddings("neg_sq_l2", temperature=0.5)
_BANK = torch.randn(10, 3)


def _bank_model(y):
    with pyro.plate("n", 4):
        x = pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("y", TiltedConditional(_CRITIC, x, _BANK), obs=y)
        contrastive_factor("f", _CRITIC, x, y, pc.Bank(_BANK, log_weights=torch.randn(10)))
        pyro.sample("c", BridgedConditional(logits=x @ _BANK.T), obs=torch.zeros(4).long())


def _closed_form_model(y):
    with pyro.plate("n", 4):
        x = pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        unit = y / y.norm(dim=-1, keepdim=True)
        pyro.sample("s", TiltedConditional(_CRITIC, x, UniformSphere(3)), obs=unit)
        gaussian = dist.MultivariateNormal(torch.zeros(3), torch.eye(3))
        pyro.sample("g", TiltedConditional(_L2, x, gaussian), obs=y)


def _sphere_model(y):
    z = pyro.sample("z", VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), 4.0))
    pyro.sample("y", VonMisesFisher(z, 2.0), obs=y[0] / y[0].norm())


@config_enumerate
def _enumerated_model(y):
    with pyro.plate("n", 4):
        x = pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        m = pyro.sample("m", ContrastiveConditional(_CRITIC, x, _BANK))
        pyro.sample("y", dist.Normal(_BANK[m], 1.0).to_event(1), obs=y)


MODELS = {
    "bank": (_bank_model, JitTrace_ELBO),
    "closed_form": (_closed_form_model, JitTrace_ELBO),
    "sphere_reparam": (poutine.reparam(_sphere_model, {"z": SphereReparam()}), JitTrace_ELBO),
    "enumerated": (_enumerated_model, lambda: JitTraceEnum_ELBO(max_plate_nesting=1)),
}


def _warnings_from(model, loss, folder):
    pyro.enable_validation(False)
    guide = AutoNormal(poutine.block(model, hide=["m"]))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss())
    y = torch.randn(4, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            svi.step(y)
    return [
        f"{os.path.relpath(w.filename, _PACKAGE)}:{w.lineno}: {str(w.message)[:60]}"
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning) and w.filename.startswith(folder)
    ]


@pytest.mark.parametrize("name", list(MODELS))
def test_no_tracer_warning_from_the_distributions(name):
    model, loss = MODELS[name]
    assert _warnings_from(model, loss, _DISTRIBUTIONS) == []


def test_no_tracer_warning_from_the_package():
    found = []
    for model, loss in MODELS.values():
        found += _warnings_from(model, loss, _PACKAGE)
    assert found == []
