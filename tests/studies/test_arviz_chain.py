"""ArviZ model comparison on the linear-Gaussian chain: truth first, exact above the shortcut."""

import torch

import pyro_contrast as pc
from pyro_contrast.studies.arviz import compare_elpd


def test_az_compare_ranks_truth_first_and_exact_above_shortcut():
    # The paper's setting: critics A-B and B-C sharing one B encoder, trained on pairs only.
    # The chain's B is anisotropic with a non-zero mean (non-uniform representations).
    torch.manual_seed(0)
    chain = pc.sim.LinearGaussianChain(dim_a=8, dim_b=4, dim_c=8, seed=0)
    a, b, c = chain.sample(8000)
    encoder_b = torch.nn.Linear(4, 8)
    ab = pc.Critic(torch.nn.Linear(8, 8), encoder_b, "neg_sq_l2", learn_temperature=True)
    bc = pc.Critic(encoder_b, torch.nn.Linear(8, 8), "neg_sq_l2", learn_temperature=True)
    pc.fit(
        (ab, bc),
        (a, b, c),
        loss="symmetric_infonce",
        steps=400,
        batch_size=256,
        lr=1e-2,
        mode="shared",
        progress=False,
    )
    _, bank, _ = chain.sample(4096)
    _, _, target = chain.sample(4096)
    bridge = pc.Bridge([ab, bc], [bank], target_bank=target)
    num_groups, k = 40, 16
    a_test, _, c_test = chain.sample(num_groups * k)
    scores = {"truth": [], "exact": [], "lse": [], "direct": []}
    with torch.no_grad():
        for g in range(num_groups):
            qa, qc = a_test[g * k : (g + 1) * k], c_test[g * k : (g + 1) * k]
            scores["truth"].append(chain.log_ratio(qa, qc).float())
            for method in ("exact", "lse", "direct"):
                scores[method].append(bridge.log_ratio(qa, qc, method))
    scores = {m: torch.cat(v) for m, v in scores.items()}
    table = compare_elpd(pc.to_inference_data(scores, torch.arange(k).repeat(num_groups)))
    print(table[["elpd_loo", "elpd_diff", "se", "dse"]])
    order = list(table.index)
    assert order[0] == "truth"
    assert order.index("exact") < order.index("direct")
