"""Che & Eysenbach (2025): how large must the B bank be? LogSumExp vs exact marginal.

The paper's bridged estimator is a LogSumExp over a bank of B samples; the exact marginal of
the tilted model is the same log-space matrix product with each B–C conditional normalized
(MATH.md §2). Both are Monte Carlo over the bank, so both improve with its size M, but they
converge to different limits when the B–C normalizer varies over B. This script trains one
pair of shared-encoder critics on the linear-Gaussian chain, then, for banks of 64 … 100,000
B samples, reports recall@1 and KL to the truth of ``lse`` and ``exact`` over held-out groups
of K triplets, with the engine's wall time per query (``bridge.log_ratio`` on one group of K
candidates, C normalizer over a fixed C bank, divided by the group's queries).

Run: ``python examples/bank_size.py --out results/che_bank_size``
"""

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _che_common as common  # noqa: E402

import pyro_contrast as pc  # noqa: E402

METHODS = ("lse", "exact")


def parse_args(argv=None):
    parser = common.new_parser(__doc__)
    parser.add_argument(
        "--bank-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384, 100000]
    )
    parser.add_argument("--target-bank-size", type=int, default=1024, help="C normalizer bank")
    parser.add_argument("--similarity", default="neg_sq_l2", choices=common.SIMILARITIES)
    common.add_training_arguments(parser, num_queries=1024)
    return parser.parse_args(argv)


def main(args):
    """Train once, sweep the bank size, write table/JSON/figure; returns the summary dict."""
    common.check_training_arguments(args, ("target_bank_size",))
    if not args.bank_sizes or min(args.bank_sizes) < 1:
        raise ValueError(f"--bank-sizes must be positive integers, got {args.bank_sizes}")
    out = common.prepare_out(args.out, args.force)
    started = time.perf_counter()
    with common.num_threads(args.num_threads):
        rows = _sweep(args)
    text = _table(rows, args)
    print(text)
    summary = {"settings": vars(args), "rows": rows, "seconds": time.perf_counter() - started}
    common.write_text(os.path.join(out, "table.txt"), text + "\n")
    common.write_text(os.path.join(out, "table.csv"), _csv(rows))
    common.write_json(os.path.join(out, "results.json"), summary)
    if not args.no_plots:
        _plot(rows, args, os.path.join(out, "che_bank_size.png"))
    return summary


def _sweep(args):
    chain = pc.sim.LinearGaussianChain(seed=args.seed)
    critics = common.make_critics(chain, args.similarity, "shared", args.dim, args.seed)
    common.train(critics, chain.sample(args.num_train), "shared", args, args.seed)
    k = args.num_candidates
    num_groups = args.num_queries // k
    a_test, _, c_test = chain.sample(num_groups * k)
    _, _, bank_c = chain.sample(args.target_bank_size)
    _, bank_b_all, _ = chain.sample(max(args.bank_sizes))
    truth = common.grouped(chain.log_ratio(a_test, c_test), k)
    rows = [_row("truth", None, common.recall_at_1(truth, k), np.zeros(len(truth)), None)]
    direct_done = False
    for size in sorted(args.bank_sizes):
        bridge = pc.Bridge(list(critics), [bank_b_all[:size]], target_bank=bank_c)
        methods = METHODS if direct_done else METHODS + ("direct",)
        for method in methods:
            scores, seconds = _grouped_scores(bridge, a_test, c_test, k, method)
            rows.append(
                _row(
                    method,
                    None if method == "direct" else size,
                    common.recall_at_1(scores, k),
                    common.kl_to_truth(truth, scores),
                    seconds / len(scores),
                )
            )
        direct_done = True
    return rows


def _grouped_scores(bridge, a, c, k, method):
    # One engine call per group of K: the query cost of ranking K candidates over the bank.
    blocks, seconds = [], 0.0
    with torch.no_grad():
        bridge.log_ratio(a[:k], c[:k], method)  # warm-up, untimed (first-call allocations)
        for start in range(0, len(a), k):
            tic = time.perf_counter()
            blocks.append(bridge.log_ratio(a[start : start + k], c[start : start + k], method))
            seconds += time.perf_counter() - tic
    return torch.cat(blocks).double().numpy(), seconds


def _row(method, size, recall, kl, seconds):
    recall_mean, recall_se = common.mean_and_se(recall)
    kl_mean, kl_se = common.mean_and_se(kl)
    return dict(
        method=method,
        bank_size=size,
        recall=recall_mean,
        recall_se=recall_se,
        kl=kl_mean,
        kl_se=kl_se,
        seconds_per_query=seconds,
    )


def _table(rows, args):
    lines = [
        f"similarity={args.similarity}, K={args.num_candidates}, C normalizer bank "
        f"{args.target_bank_size}; intervals +- 1.96 SE over queries",
        f"{'method':<7} {'bank M':>7}  {'recall@1':>15}  {'KL to truth':>15}  {'ms/query':>9}",
    ]
    for r in rows:
        size = "-" if r["bank_size"] is None else str(r["bank_size"])
        ms = "-" if r["seconds_per_query"] is None else f"{1e3 * r['seconds_per_query']:.3f}"
        lines.append(
            f"{r['method']:<7} {size:>7}  {r['recall']:>8.3f}+-{1.96 * r['recall_se']:.3f}"
            f"  {r['kl']:>8.3f}+-{1.96 * r['kl_se']:.3f}  {ms:>9}"
        )
    return "\n".join(lines)


def _csv(rows):
    header = "method,bank_size,recall,recall_se,kl,kl_se,seconds_per_query"
    lines = [header] + [
        ",".join("" if r[k] is None else str(r[k]) for k in header.split(",")) for r in rows
    ]
    return "\n".join(lines) + "\n"


def _plot(rows, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(10, 3.0))
    colors = {"lse": "#6baed6", "exact": "#08519c"}
    for method, color in colors.items():
        picked = [r for r in rows if r["method"] == method]
        sizes = [r["bank_size"] for r in picked]
        for axis, key in zip(axes[:2], ("recall", "kl"), strict=True):
            mean = np.array([r[key] for r in picked])
            half = 1.96 * np.array([r[f"{key}_se"] for r in picked])
            axis.errorbar(sizes, mean, yerr=half, color=color, marker="o", ms=3, label=method)
        axes[2].plot(
            sizes,
            [1e3 * r["seconds_per_query"] for r in picked],
            color=color,
            marker="o",
            ms=3,
            label=method,
        )
    truth = next(r for r in rows if r["method"] == "truth")
    direct = next(r for r in rows if r["method"] == "direct")
    axes[0].axhline(truth["recall"], color="k", linestyle="--", label="truth (Bayes)")
    axes[0].axhline(direct["recall"], color="#e6550d", linestyle=":", label="direct")
    axes[1].axhline(direct["kl"], color="#e6550d", linestyle=":", label="direct")
    axes[0].set_ylabel(f"recall@1 (K={args.num_candidates})")
    axes[1].set_ylabel("KL(truth || method), nats")
    axes[2].set_ylabel("ms per query")
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xlabel("B bank size M")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Bank size ({args.similarity} critics, shared B encoder)", fontsize=10)
    figure.tight_layout()
    common.write_figure(path, figure)


if __name__ == "__main__":
    try:
        main(parse_args())
    except ValueError as error:
        sys.exit(f"{os.path.basename(__file__)}: error: {error}")
