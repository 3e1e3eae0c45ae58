"""Che & Eysenbach (2025), synthetic bridging experiment: shared vs separate vs oracle critics.

Reproduces the paper's linear-Gaussian study of aligning unpaired modalities. B is Gaussian,
A and C are linear maps of B plus noise (``pc.sim.LinearGaussianChain``), so the true
``log p(c|a) - log p(c)`` is known. For each similarity (``cosine``, ``dot``, ``neg_sq_l2``)
three models are trained with ``pc.fit``:

- ``shared``: critics A–B and B–C with ONE B encoder (the "unconscious" contrastive learner),
  trained on (A, B) and (B, C) pairs only;
- ``separate``: the same with two B encoders;
- ``oracle``: one A–C critic trained on (A, C) pairs (never available in the real setting).

Held-out triplets are scored in groups of K (default 32): each A query ranks the group's C
items. For the bridged models we report recall@1 of the ``direct`` shortcut, the paper's
LogSumExp estimator ``lse`` and the ``exact`` marginal over a bank of B samples (C normalizer
from a C bank); for the oracle, its own critic. The Bayes ceiling is the recall@1 of the
true PMI ranking from the simulator; it must not be beaten by more than its Monte Carlo error
(checked and printed). Intervals are Student-t across seeds.

Run: ``python examples/che_eysenbach_synthetic.py --out results/che_synthetic``
"""

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _che_common as common  # noqa: E402

import pyro_contrast as pc  # noqa: E402

BRIDGED = ("direct", "lse", "exact")


def parse_args(argv=None):
    parser = common.new_parser(__doc__)
    parser.add_argument("--num-seeds", type=int, default=3, help="independent training runs")
    parser.add_argument(
        "--similarities", nargs="+", default=list(common.SIMILARITIES), choices=common.SIMILARITIES
    )
    parser.add_argument("--bank-size", type=int, default=4096, help="B bank (and C bank) size")
    common.add_training_arguments(parser)
    return parser.parse_args(argv)


def main(args):
    """Train, score, check the ceiling, write the results folder; returns the summary dict."""
    common.check_training_arguments(args, ("num_seeds", "bank_size"))
    out = common.prepare_out(args.out, args.force)
    started = time.perf_counter()
    with common.num_threads(args.num_threads):
        # One chain (a fixed problem) whose draws continue from seed to seed.
        chain = pc.sim.LinearGaussianChain(seed=args.seed)
        per_seed = [_run_seed(chain, args, args.seed + s) for s in range(args.num_seeds)]
    rows = _summarize(per_seed, args)
    pooled = {
        (key if key == "bayes" else "/".join(key)): np.concatenate(
            [p["recall"][key] for p in per_seed]
        )
        for key in per_seed[0]["recall"]
    }
    check = common.ceiling_check(pooled)
    closeness = _closeness(rows, args.similarities)
    summary = {
        "settings": vars(args),
        "rows": rows,
        "ceiling_check": check,
        "exact_vs_lse": closeness,
        "seconds": time.perf_counter() - started,
    }
    table = _table(rows)
    text = table + "\n\n" + _check_text(check) + "\n" + _closeness_text(closeness)
    print(text)
    common.write_text(os.path.join(out, "table.txt"), text + "\n")
    common.write_text(os.path.join(out, "table.csv"), _csv(rows))
    common.write_json(os.path.join(out, "results.json"), summary)
    if not args.no_plots:
        _plot(rows, args, os.path.join(out, "che_synthetic_recall.png"))
    return summary


def _run_seed(chain, args, seed):
    data = chain.sample(args.num_train)
    a_test, _, c_test = chain.sample(args.num_queries)
    _, bank_b, _ = chain.sample(args.bank_size)
    _, _, bank_c = chain.sample(args.bank_size)
    k = args.num_candidates
    truth = common.grouped(chain.log_ratio(a_test, c_test), k)
    recall = {"bayes": common.recall_at_1(truth, k)}
    kl = {}
    for similarity in args.similarities:
        for mode in ("shared", "separate", "oracle"):
            critics = common.make_critics(chain, similarity, mode, args.dim, seed)
            common.train(critics, data, mode, args, seed)
            with torch.no_grad():
                if mode == "oracle":
                    scores = {"critic": critics.pairwise(a_test, c_test)}
                else:
                    bridge = pc.Bridge(list(critics), [bank_b], target_bank=bank_c)
                    scores = {m: bridge.log_ratio(a_test, c_test, method=m) for m in BRIDGED}
            for method, full in scores.items():
                grouped = common.grouped(full, k)
                recall[(similarity, mode, method)] = common.recall_at_1(grouped, k)
                kl[(similarity, mode, method)] = common.kl_to_truth(truth, grouped)
    return {"recall": recall, "kl": kl}


def _summarize(per_seed, args):
    rows = []
    for key in per_seed[0]["recall"]:
        recalls = [p["recall"][key].mean() for p in per_seed]
        mean, low, high = common.t_interval(recalls, bounds=(0.0, 1.0))
        similarity, mode, method = ("-", "truth", "bayes") if key == "bayes" else key
        row = dict(
            similarity=similarity,
            model=mode,
            method=method,
            recall=mean,
            recall_low=low,
            recall_high=high,
            per_seed=recalls,
        )
        if key != "bayes":
            kl_mean, kl_low, kl_high = common.t_interval(
                [p["kl"][key].mean() for p in per_seed], bounds=(0.0, None)
            )
            row.update(kl=kl_mean, kl_low=kl_low, kl_high=kl_high)
        rows.append(row)
    return rows


def _closeness(rows, similarities):
    ceiling = next(r["recall"] for r in rows if r["method"] == "bayes")
    result = {}
    for similarity in similarities:
        for mode in ("shared", "separate"):
            gap = {
                r["method"]: ceiling - r["recall"]
                for r in rows
                if r["similarity"] == similarity and r["model"] == mode
            }
            result[f"{similarity}/{mode}"] = {
                "gap_exact": gap["exact"],
                "gap_lse": gap["lse"],
                "exact_at_least_as_close": abs(gap["exact"]) <= abs(gap["lse"]),
            }
    return result


def _table(rows):
    lines = [
        f"{'similarity':<10} {'model':<9} {'method':<7} {'recall@1 [95% t]':<26} "
        f"{'KL(truth||method) [95% t]':<26}"
    ]
    for r in rows:
        recall = common.format_interval(r["recall"], r["recall_low"], r["recall_high"])
        kl = common.format_interval(r["kl"], r["kl_low"], r["kl_high"]) if "kl" in r else "-"
        lines.append(f"{r['similarity']:<10} {r['model']:<9} {r['method']:<7} {recall:<26} {kl}")
    return "\n".join(lines)


def _check_text(check):
    bad = [c for c in check if not c["ok"]]
    worst = max(check, key=lambda c: c["excess"] / max(c["se"], 1e-12))
    verdict = "OK" if not bad else f"VIOLATED by {[c['method'] for c in bad]}"
    return (
        f"Bayes ceiling check (method - ceiling <= 3 SE, paired over pooled queries): "
        f"{verdict}; closest: {worst['method']} excess {worst['excess']:+.4f} "
        f"(SE {worst['se']:.4f})"
    )


def _closeness_text(closeness):
    lines = ["Gap to the Bayes ceiling, exact vs lse:"]
    for name, c in closeness.items():
        mark = "exact >= lse" if c["exact_at_least_as_close"] else "lse closer"
        lines.append(f"  {name:<20} exact {c['gap_exact']:+.4f}  lse {c['gap_lse']:+.4f}  ({mark})")
    return "\n".join(lines)


def _csv(rows):
    header = "similarity,model,method,recall,recall_low,recall_high,kl,kl_low,kl_high"
    lines = [header]
    for r in rows:
        values = [r.get(k, "") for k in header.split(",")]
        lines.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values))
    return "\n".join(lines) + "\n"


def _plot(rows, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [("shared", m) for m in BRIDGED] + [("separate", m) for m in BRIDGED]
    bars.append(("oracle", "critic"))
    colors = ["#9ecae1", "#4292c6", "#08519c", "#fdae6b", "#f16913", "#a63603", "#31a354"]
    figure, axis = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(bars)
    for j, (mode, method) in enumerate(bars):
        picked = [
            next(r for r in rows if (r["similarity"], r["model"], r["method"]) == (s, mode, method))
            for s in args.similarities
        ]
        x = np.arange(len(args.similarities)) + (j - len(bars) / 2 + 0.5) * width
        means = np.array([r["recall"] for r in picked])
        errors = np.array(
            [[r["recall"] - r["recall_low"], r["recall_high"] - r["recall"]] for r in picked]
        ).T
        axis.bar(x, means, width, yerr=errors, color=colors[j], label=f"{mode} {method}")
    bayes = next(r for r in rows if r["method"] == "bayes")
    axis.axhline(bayes["recall"], color="k", linestyle="--", label="Bayes ceiling (truth)")
    axis.axhline(1 / args.num_candidates, color="grey", linestyle=":", label="chance")
    axis.set_xticks(np.arange(len(args.similarities)), args.similarities)
    axis.set_ylabel(f"recall@1 (K={args.num_candidates})")
    axis.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.set_title("Linear-Gaussian chain: bridged vs oracle critics")
    common.write_figure(path, figure)


if __name__ == "__main__":
    try:
        main(parse_args())
    except ValueError as error:
        sys.exit(f"{os.path.basename(__file__)}: error: {error}")
