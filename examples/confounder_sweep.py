"""Che & Eysenbach (2025): what a hidden A–C confounder does to bridged retrieval.

Bridging through B rests on :math:`A \\perp C \\mid B` (their Lemma 1). The linear-Gaussian
chain's ``rho`` adds a hidden confounder U shared by A and C, which breaks it: part of the
A–C dependence no longer passes through B, and no critic trained on (A, B) and (B, C) pairs
can see it. For each rho this script trains shared-encoder critics (A–B, B–C) and an
``oracle`` critic on (A, C) pairs, scores held-out triplets in groups of K, and reports
recall@1 and KL to the truth of ``exact``, ``lse`` and ``direct`` next to the oracle and the
truth's (Bayes) ranking. Expected: the truth and the oracle gain with rho (A and C become
more dependent), the bridged methods do not, so the gap grows.

Run: ``python examples/confounder_sweep.py --out results/che_confounder``
"""

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _che_common as common  # noqa: E402

import pyro_contrast as pc  # noqa: E402

METHODS = ("truth", "oracle", "exact", "lse", "direct")


def parse_args(argv=None):
    parser = common.new_parser(__doc__)
    parser.add_argument("--num-seeds", type=int, default=2, help="training runs per rho")
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--similarity", default="neg_sq_l2", choices=common.SIMILARITIES)
    parser.add_argument("--bank-size", type=int, default=4096)
    common.add_training_arguments(parser)
    return parser.parse_args(argv)


def main(args):
    """Sweep rho, write table/JSON/figure to ``--out``; returns the summary dict."""
    common.check_training_arguments(args, ("num_seeds", "bank_size"))
    if any(not np.isfinite(r) or r < 0 for r in args.rhos):
        raise ValueError(f"--rhos must be non-negative numbers, got {args.rhos}")
    out = common.prepare_out(args.out, args.force)
    started = time.perf_counter()
    rows = []
    with common.num_threads(args.num_threads):
        for rho in args.rhos:
            chain = pc.sim.LinearGaussianChain(rho=rho, seed=args.seed)
            runs = [_run(chain, args, args.seed + s) for s in range(args.num_seeds)]
            for method in METHODS:
                recall = np.concatenate([r["recall"][method] for r in runs])
                kl = np.concatenate([r["kl"][method] for r in runs])
                mean, se = common.mean_and_se(recall)
                kl_mean, kl_se = common.mean_and_se(kl)
                rows.append(
                    dict(rho=rho, method=method, recall=mean, recall_se=se, kl=kl_mean, kl_se=kl_se)
                )
    check = _ceiling_ok(rows)
    text = _table(rows, args) + "\n\n" + check
    print(text)
    summary = {
        "settings": vars(args),
        "rows": rows,
        "ceiling_check": check,
        "seconds": time.perf_counter() - started,
    }
    common.write_text(os.path.join(out, "table.txt"), text + "\n")
    common.write_text(os.path.join(out, "table.csv"), _csv(rows))
    common.write_json(os.path.join(out, "results.json"), summary)
    if not args.no_plots:
        _plot(rows, args, os.path.join(out, "che_confounder.png"))
    return summary


def _run(chain, args, seed):
    data = chain.sample(args.num_train)
    a_test, _, c_test = chain.sample(args.num_queries)
    _, bank_b, _ = chain.sample(args.bank_size)
    _, _, bank_c = chain.sample(args.bank_size)
    k = args.num_candidates
    scores = {"truth": chain.log_ratio(a_test, c_test)}
    critics = common.make_critics(chain, args.similarity, "shared", args.dim, seed)
    common.train(critics, data, "shared", args, seed)
    oracle = common.make_critics(chain, args.similarity, "oracle", args.dim, seed)
    common.train(oracle, data, "oracle", args, seed)
    with torch.no_grad():
        bridge = pc.Bridge(list(critics), [bank_b], target_bank=bank_c)
        for method in ("exact", "lse", "direct"):
            scores[method] = bridge.log_ratio(a_test, c_test, method=method)
        scores["oracle"] = oracle.pairwise(a_test, c_test)
    grouped = {m: common.grouped(v, k) for m, v in scores.items()}
    return {
        "recall": {m: common.recall_at_1(v, k) for m, v in grouped.items()},
        "kl": {m: common.kl_to_truth(grouped["truth"], v) for m, v in grouped.items()},
    }


def _ceiling_ok(rows):
    # Each method's pooled recall vs the truth's at the same rho, held to 3 standard errors
    # (unpaired here, so conservative: sqrt(se_m^2 + se_truth^2)).
    bad = []
    for r in rows:
        truth = next(t for t in rows if t["rho"] == r["rho"] and t["method"] == "truth")
        bound = 3 * np.hypot(r["recall_se"], truth["recall_se"])
        if r["recall"] - truth["recall"] > bound:
            bad.append((r["rho"], r["method"]))
    return "Bayes ceiling check (method - truth <= 3 SE at every rho): " + (
        "OK" if not bad else f"VIOLATED at {bad}"
    )


def _table(rows, args):
    lines = [
        f"recall@1 (K={args.num_candidates}) and KL(truth||method), +- 1.96 SE "
        f"over pooled queries; similarity={args.similarity}",
        f"{'rho':>5}  " + "  ".join(f"{m:>15}" for m in METHODS),
    ]
    for rho in args.rhos:
        picked = [next(r for r in rows if r["rho"] == rho and r["method"] == m) for m in METHODS]
        lines.append(
            f"{rho:>5.2f}  "
            + "  ".join(f"{r['recall']:>8.3f}+-{1.96 * r['recall_se']:.3f}" for r in picked)
        )
    lines.append("KL to truth (nats)")
    for rho in args.rhos:
        picked = [next(r for r in rows if r["rho"] == rho and r["method"] == m) for m in METHODS]
        lines.append(
            f"{rho:>5.2f}  "
            + "  ".join(f"{r['kl']:>8.3f}+-{1.96 * r['kl_se']:.3f}" for r in picked)
        )
    return "\n".join(lines)


def _csv(rows):
    header = "rho,method,recall,recall_se,kl,kl_se"
    lines = [header] + [",".join(str(r[k]) for k in header.split(",")) for r in rows]
    return "\n".join(lines) + "\n"


def _plot(rows, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "truth": ("k", "--"),
        "oracle": ("#31a354", "-"),
        "exact": ("#08519c", "-"),
        "lse": ("#6baed6", "-"),
        "direct": ("#e6550d", "-"),
    }
    figure, axes = plt.subplots(1, 2, figsize=(8.5, 3.2))
    for method, (color, line) in styles.items():
        picked = [r for r in rows if r["method"] == method]
        rho = [r["rho"] for r in picked]
        for axis, key in zip(axes, ("recall", "kl"), strict=True):
            mean = np.array([r[key] for r in picked])
            half = 1.96 * np.array([r[f"{key}_se"] for r in picked])
            axis.plot(rho, mean, color=color, linestyle=line, marker="o", ms=3, label=method)
            axis.fill_between(rho, mean - half, mean + half, color=color, alpha=0.15)
    axes[0].set_ylabel(f"recall@1 (K={args.num_candidates})")
    axes[1].set_ylabel("KL(truth || method), nats")
    for axis in axes:
        axis.set_xlabel("confounder weight rho")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Hidden A–C confounder ({args.similarity} critics)", fontsize=10)
    common.write_figure(path, figure)


if __name__ == "__main__":
    try:
        main(parse_args())
    except ValueError as error:
        sys.exit(f"{os.path.basename(__file__)}: error: {error}")
