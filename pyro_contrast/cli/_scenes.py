"""The demo's two scenes on the linear-Gaussian chain A – B – C (exact truth known).

Each scene trains contrastive models on unpaired data only — (A, B) pairs and, independently
drawn, (B, C) pairs; no (A, C) pair is ever seen — and embeds held-out queries, candidates and
banks with them, exactly as a user embeds data with pretrained models:

- ``shared``: critics A–B and B–C share one B encoder (trained jointly, Che & Eysenbach's
  "unconscious" setting), so the bank has one representation;
- ``separate``: two models trained independently, each with its own B encoder (as CLIP and
  CLAP are); the bank holds the same M items embedded by both, ``Bank(views=(ab, bc))``.

Encoders are small MLPs, so each critic can represent its pair's true log ratio (quadratic
in the inputs), and the exact bridge can approach the truth.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch

from pyro_contrast.cli._inputs import Inputs
from pyro_contrast.critics import Critic
from pyro_contrast.sim.linear_gaussian import LinearGaussianChain
from pyro_contrast.studies.metrics import grouped_candidates
from pyro_contrast.training.fit import fit

SCENES = {
    "shared": "critics A-B and B-C share one B encoder",
    "separate": "two separately trained models, each with its own B encoder",
}
# Temperatures start where contrastive training usually ends up: CLIP's 0.07 for cosine
# critics (learning it from 1 takes most of a short run), 1 for unbounded similarities.
_INITIAL_TEMPERATURE = {"cosine": 0.07, "dot": 1.0, "neg_sq_l2": 1.0}


# The embedding files of a scene, as `pyro-contrast bridge` takes them.
INPUT_FILES = {
    "queries": "queries.npz",
    "bank": "bank.npz",
    "candidates": "candidates.npz",
    "c_bank": "c_bank.npz",
    "truth": "truth.npz",
}


@dataclass
class Data:
    """Everything drawn from the chain, shared by both scenes (a fair comparison)."""

    chain: LinearGaussianChain
    pairs_ab: tuple
    pairs_bc: tuple
    queries: torch.Tensor
    candidates: torch.Tensor
    bank_b: torch.Tensor
    bank_c: torch.Tensor
    truth: np.ndarray
    positives: np.ndarray


@dataclass
class Scene:
    name: str
    description: str
    inputs: Inputs
    final_loss: float
    seconds: float


def draw(settings):
    """Draw the training pairs, the held-out triplets and the two banks."""
    chain = LinearGaussianChain(dim_a=8, dim_b=4, dim_c=8, seed=settings.seed)
    a, b, _ = chain.sample(settings.num_train)
    _, b2, c = chain.sample(settings.num_train)  # B-C pairs from other draws than the A-B ones
    queries, _, candidates = chain.sample(settings.num_queries)
    _, bank_b, _ = chain.sample(settings.bank_size)
    _, _, bank_c = chain.sample(settings.c_bank_size)
    size = settings.num_candidates
    truth = grouped_candidates(chain.log_ratio(queries, candidates).numpy(), size)
    positives = np.tile(np.arange(size), settings.num_queries // size)
    return Data(chain, (a, b), (b2, c), queries, candidates, bank_b, bank_c, truth, positives)


def _mlp(dim_in, settings):
    return torch.nn.Sequential(
        torch.nn.Linear(dim_in, settings.hidden),
        torch.nn.GELU(),
        torch.nn.Linear(settings.hidden, settings.embedding_dim),
    )


def _critic(encoder_x, encoder_y, settings):
    return Critic(
        encoder_x,
        encoder_y,
        settings.similarity,
        temperature=_INITIAL_TEMPERATURE[settings.similarity],
        learn_temperature=True,
    )


def train(name, data, settings, index):
    """Train one scene's two critics and embed the held-out data with them."""
    started = time.perf_counter()
    torch.manual_seed(settings.seed + index)  # encoder initialization, per scene
    chain = data.chain
    encoder_b = _mlp(chain.dim_b, settings)
    other_b = encoder_b if name == "shared" else _mlp(chain.dim_b, settings)
    critic_ab = _critic(_mlp(chain.dim_a, settings), encoder_b, settings)
    critic_bc = _critic(other_b, _mlp(chain.dim_c, settings), settings)
    history = fit(
        (critic_ab, critic_bc),
        (data.pairs_ab, data.pairs_bc),
        loss=settings.loss,
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        validation=settings.validation,
        seed=settings.seed,
        mode=name,
        progress=not settings.quiet,
    )
    with torch.no_grad():
        inputs = Inputs(
            queries=critic_ab.encode_x(data.queries),
            bank_ab=critic_ab.encode_y(data.bank_b),
            bank_bc=critic_bc.encode_x(data.bank_b),
            candidates=critic_bc.encode_y(data.candidates),
            c_bank=critic_bc.encode_y(data.bank_c),
            files={},
            temperatures={
                "ab": (critic_ab.temperature.item(), "learned"),
                "bc": (critic_bc.temperature.item(), "learned"),
            },
        )
    return Scene(
        name,
        SCENES[name],
        inputs,
        float(history.train_loss[-1]),
        time.perf_counter() - started,
    )


def save_inputs(scene, folder, data):
    """Write a scene's embeddings into ``folder`` as the files ``pyro-contrast bridge`` reads
    (names in :data:`INPUT_FILES`)."""
    inputs = scene.inputs
    folder.mkdir()
    arrays = {
        "queries": {"embeddings": inputs.queries.numpy(), "positives": data.positives},
        "bank": {
            "ab": inputs.bank_ab.numpy(),
            "bc": inputs.bank_bc.numpy(),
            "temperature_ab": np.float64(inputs.temperatures["ab"][0]),
            "temperature_bc": np.float64(inputs.temperatures["bc"][0]),
        },
        "candidates": {"embeddings": inputs.candidates.numpy()},
        "c_bank": {"embeddings": inputs.c_bank.numpy()},
        "truth": {"truth": data.truth},
    }
    for key, content in arrays.items():
        np.savez(folder / INPUT_FILES[key], **content)
