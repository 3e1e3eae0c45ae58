import math

import pytest
import torch

import pyro_contrast as pc
from pyro_contrast.marginals import chain
from tests.common import assert_close


def _critics():
    torch.manual_seed(0)
    ab = pc.Critic(torch.nn.Linear(3, 3).double(), None, "dot", temperature=0.5)
    bc = pc.Critic(None, torch.nn.Linear(3, 3).double(), "neg_sq_l2", temperature=0.8)
    return ab, bc


@pytest.mark.parametrize("method", ["exact", "lse"])
def test_partials_of_disjoint_chunks_combine_by_logaddexp(method):
    ab, bc = _critics()
    bank, log_w = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    a, c = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    kwargs = dict(
        left=(ab,),
        right=bc,
        queries=[ab.encode_x(a)],
        candidates=bc.encode_y(c),
        targets=None,
        method=method,
    )
    whole = chain.three_chain_partials(bank, log_w, **kwargs)
    parts = [
        chain.three_chain_partials(bank[s], log_w[s], **kwargs) for s in (slice(0, 5), slice(5, 12))
    ]
    for i in range(2):
        assert_close(torch.logaddexp(parts[0][i], parts[1][i]), whole[i], atol=1e-12)
    # Brute force of the bridge formula (mathematics page, section 2) with weights.
    f = ab.pairwise(a, bank) + log_w
    g = bc.pairwise(bank, c)
    if method == "exact":
        expected = (f.softmax(-1) @ g.softmax(-1)).log() + math.log(5)
    else:
        expected = torch.logsumexp(f[:, :, None] + g[None], 1) - torch.logsumexp(log_w, 0)
    assert_close(whole[0] - whole[1][:, None], expected, atol=1e-12)


def test_log_normalizer_blocks_equal_one_pass(monkeypatch):
    _, bc = _critics()
    bank, targets = torch.randn(9, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    expected = bc.pairwise(bank, targets).logsumexp(-1) - math.log(7)
    monkeypatch.setattr(chain, "_MAX_BLOCK", 10)  # forces one bank row per block
    assert_close(chain.log_normalizer(bc, bank, bc.encode_y(targets)), expected, atol=1e-12)


def test_forward_and_backward_messages_are_normalized_posteriors():
    ab, bc = _critics()
    cd = pc.Critic.from_embeddings("cosine", 0.3).double()
    banks = [torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)]
    hops = [(ab,), (bc,), (cd,)]
    encoded = [
        ([hops[i][0].encode_y(banks[i])], hops[i + 1][0].encode_x(banks[i]), None) for i in range(2)
    ]
    a = torch.randn(2, 3, dtype=torch.float64)
    alphas = chain.forward_messages(hops, [ab.encode_x(a)], encoded, normalized=True)
    assert_close(alphas[0].exp().sum(-1), torch.ones(2), atol=1e-12)
    assert_close(alphas[1].exp().sum(-1), torch.ones(2), atol=1e-12)
    step = bc.pairwise(banks[0], banks[1]).softmax(-1)
    assert_close(alphas[1].exp(), alphas[0].exp() @ step, atol=1e-12)
    last = torch.randn(2, 4, dtype=torch.float64)
    betas = chain.backward_messages(hops, encoded, last)
    assert_close(betas[0].exp(), last.exp() @ step.T, atol=1e-12)
