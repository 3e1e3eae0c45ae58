"""Che & Eysenbach (2025), didactic experiment: shared vs separate B encoders vs an oracle.

Reproduces the paper's synthetic study (Sec. 6.1–6.2, Fig. 2–3) in the authors' setting,
read from their public code: B ~ N(mu, R^T R) in 16 dimensions, A and C linear maps of B to
32 dimensions plus noise of scale 2 (``pyro_contrast.sim.didactic.DidacticChain``); MLP
encoders; symmetric InfoNCE with a learned temperature per critic; recall@1 among groups of
K = 32 held-out triplets (chance 1/32). For each critic (``cosine``, ``dot``, the paper's
non-squared L2 ``neg_l2`` and ``neg_sq_l2``) three models are trained with ``pc.fit``:

- ``shared``: A–B and B–C critics with ONE B encoder, trained on (A, B) and (B, C) pairs
  drawn from independent triplets;
- ``separate``: the same with two B encoders (the paper's "disparate" models): the bank
  holds both views of the same B items, ``pc.Bank(views=(emb_ab, emb_bc))``;
- ``oracle``: one A–C critic trained on (A, C) pairs (never available in the real setting).

Scores: ``direct`` (the A embedding against the C embedding), the paper's LogSumExp ``lse``
and the ``exact`` marginal (C normalizer over a bank of C samples) over B banks of each
``--bank-sizes``, whose items never include the queries' own B values. References from the
simulator: the Bayes ceiling (true PMI), the A ⊥ C | B ceiling (Lemma 1 with the true
conditionals, infinite bank) and the LogSumExp with the *true* PMIs over the same bank.

The authors' evaluation differs: their bank holds the queries' own B values and their
LogSumExp drops the learned logit scale. Both are measured here too (``lse_leak``,
``exact_leak``, ``lse_no_scale``, at ``--leak-bank-size``) and reported apart.

Writes ``table.txt``, ``table.csv``, ``results.json``, ``claims.json`` and a figure.

Run: ``python examples/che_eysenbach_synthetic.py --out results/che_synthetic``
(``--quick`` for a one-minute check).
"""

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _che_common as common  # noqa: E402

FULL = dict(
    common.DIDACTIC_FULL,
    similarities=list(common.SIMILARITIES),
    bank_sizes=[5000, 100000],
    leak_bank_size=5000,
)
QUICK = dict(
    common.DIDACTIC_QUICK, similarities=["neg_l2", "dot"], bank_sizes=[2000], leak_bank_size=2000
)
#: Recall@1 from the authors' repository (RESULTS.md, corrected Fig. 2 and 3: held-out
#: queries, independent bridge pool, 10 seeds), critics cosine / dot / -1/2 ||.||^2.
PAPER = {
    "shared_direct": {"cosine": 0.99, "dot": 0.39, "neg_sq_l2": 1.00},
    "shared_mc_5k": {"cosine": 0.92, "dot": 0.87, "neg_sq_l2": 0.87},
    "shared_mc_100k": {"cosine": 0.98, "dot": 0.96, "neg_sq_l2": 0.97},
    "separate_direct": {"cosine": 0.03, "dot": 0.03, "neg_sq_l2": 0.04},
    "separate_mc_5k": {"cosine": 0.82, "dot": 0.73, "neg_sq_l2": 0.70},
    "separate_mc_100k": {"cosine": 0.94, "dot": 0.89, "neg_sq_l2": 0.88},
    "oracle": {"cosine": 1.00, "dot": 0.99, "neg_sq_l2": 1.00},
    "bayes": 0.999,
}


def parse_args(argv=None):
    parser = common.add_didactic_arguments(common.new_parser(__doc__))
    parser.add_argument("--similarities", nargs="+", choices=common.SIMILARITIES)
    parser.add_argument("--kinds", nargs="+", choices=common.KINDS, default=list(common.KINDS))
    parser.add_argument("--bank-sizes", type=int, nargs="+", help="B bank sizes M")
    parser.add_argument("--leak-bank-size", type=int, help="bank of the authors' protocol")
    return parser.parse_args(argv)


def main(args):
    """Train, score, write the results folder; returns the summary dict."""
    if args.rescore:
        return common.rescore(args.out, _claims)
    common.resolve(args, FULL, QUICK)
    if min(args.bank_sizes) < 1 or args.leak_bank_size < args.num_queries:
        raise ValueError("--bank-sizes must be positive and --leak-bank-size >= --num-queries")
    out = common.prepare_out(args.out, args.force)
    started = time.perf_counter(), time.process_time()
    pooled, timings = {}, []
    with common.num_threads(args.num_threads):
        for s in range(args.num_seeds):
            _run_seed(args, args.seed + s, pooled, timings)
    rows = _rows(pooled, args)
    claims = _claims(rows, args)
    text = _table(rows, args) + "\n\n" + _claims_text(claims)
    files = {"table.csv": _csv(rows)}
    plot = (_plot, "che_synthetic_recall.png")
    return common.finish(out, args, rows, claims, text, started, files, plot, timings=timings)


def _add(pooled, key, values):
    pooled.setdefault(key, []).append(values)


def _run_seed(args, seed, pooled, timings):
    chain = common.make_chain(args, seed)
    k = args.num_candidates
    a, b, c = chain.sample(args.num_queries)
    _, bank_b, _ = chain.sample(max(max(args.bank_sizes), args.leak_bank_size))
    _, _, targets_c = chain.sample(args.target_bank_size)
    _add(pooled, ("-", "truth", "bayes", None), common.bayes_recall(chain, a, c, k))
    _add(pooled, ("-", "truth", "ci_ceiling", None), common.bridged_recall(chain, a, c, k))
    for size in args.bank_sizes:
        recall = common.true_lse_recall(chain, a, c, bank_b[:size], k)
        _add(pooled, ("-", "truth", "true_pmi_lse", size), recall)
    leak_bank = torch.cat([b, bank_b[: args.leak_bank_size - len(b)]])
    recall = common.true_lse_recall(chain, a, c, leak_bank, k)
    _add(pooled, ("-", "truth", "true_pmi_lse_leak", args.leak_bank_size), recall)
    for similarity in args.similarities:
        for kind in args.kinds:
            critics = common.make_critics(chain, similarity, kind, args, seed)
            loss, train_seconds = common.train(critics, chain, kind, args, seed)
            tic = time.perf_counter()
            emb = common.Embedded(critics, kind, a, c, bank_b, targets_c)
            recall, _ = common.grouped_recall(emb.direct, len(a), k)
            _add(pooled, (similarity, kind, "direct", None), recall)
            if kind != "oracle":
                _score_bridged(emb, critics, b, similarity, kind, args, pooled)
            timings.append(
                dict(
                    seed=seed,
                    similarity=similarity,
                    kind=kind,
                    final_loss=loss,
                    temperatures=emb.temperatures,
                    train_seconds=round(train_seconds, 1),
                    eval_seconds=round(time.perf_counter() - tic, 1),
                )
            )
            print(
                f"seed {seed} {similarity:<9} {kind:<8} loss {loss:.3f} "
                f"train {train_seconds:.0f} s eval {time.perf_counter() - tic:.0f} s",
                flush=True,
            )


def _score_bridged(emb, critics, own_b, similarity, kind, args, pooled):
    k = args.num_candidates
    for size in args.bank_sizes:
        bridge = emb.bridge(size)
        for method in ("lse", "exact"):
            recall, _ = common.bridge_recall(bridge, emb, method, k)
            _add(pooled, (similarity, kind, method, size), recall)
    leak = emb.bridge(args.leak_bank_size, own_b=emb.own_b(critics, own_b))
    for method in ("lse", "exact"):
        recall, _ = common.bridge_recall(leak, emb, method, k)
        _add(pooled, (similarity, kind, f"{method}_leak", args.leak_bank_size), recall)
    no_scale = emb.bridge(args.leak_bank_size, ignore_scale=True)
    recall, _ = common.bridge_recall(no_scale, emb, "lse", k)
    _add(pooled, (similarity, kind, "lse_no_scale", args.leak_bank_size), recall)


def _rows(pooled, args):
    rows = []
    for (similarity, kind, method, size), runs in pooled.items():
        row = dict(similarity=similarity, kind=kind, method=method, bank_size=size)
        row.update(common.summary(np.concatenate(runs)))
        row["per_seed"] = [round(float(np.mean(r)), 4) for r in runs]
        rows.append(row)
    return rows


def _get(rows, similarity, kind, method, size=None):
    for r in rows:
        if (r["similarity"], r["kind"], r["method"], r["bank_size"]) == (
            similarity,
            kind,
            method,
            size,
        ):
            return r["recall"]
    return None


def _claims(rows, args):
    big = max(args.bank_sizes)
    chance = 1.0 / args.num_candidates
    bayes = _get(rows, "-", "truth", "bayes")
    claims = []
    sims = args.similarities
    # 1. Shared B encoder: direct comparison recovers the ranking (cosine and L2 critics).
    shared = [s for s in sims if s != "dot" and "shared" in args.kinds]
    if shared:
        ours = {f"direct_{s}": _get(rows, s, "shared", "direct") for s in shared}
        for s in shared:
            ours[f"exact_{s}"] = _get(rows, s, "shared", "exact", big)
            ours[f"lse_{s}"] = _get(rows, s, "shared", "lse", big)
        if "oracle" in args.kinds:
            ours.update({f"oracle_{s}": _get(rows, s, "oracle", "direct") for s in shared})
        ours["bayes"] = bayes
        direct = [ours[f"direct_{s}"] for s in shared]
        verdict = (
            "reproduced"
            if min(direct) >= 0.94
            else "partly"
            if min(direct) >= 0.5
            else "not reproduced"
        )
        claims.append(
            common.claim(
                "che-shared-direct",
                "With one shared B encoder, comparing the A and C representations directly "
                "retrieves the right C (cosine and L2 critics), as well as the bank estimators",
                {
                    "direct_cosine": 0.99,
                    "direct_neg_sq_l2": 1.00,
                    "mc_100k_cosine": 0.98,
                    "mc_100k_neg_sq_l2": 0.97,
                    "oracle": 1.00,
                    "bayes": PAPER["bayes"],
                },
                common.rounded(ours),
                verdict,
                bank_size=big,
                paper_source="authors' repository RESULTS.md (corrected Fig. 2), 10 seeds",
            )
        )
    # 2. Separate B encoders: direct at chance, bank estimators still work. The paper's
    # numbers exist per critic (cosine, dot, -1/2||.||^2), so each is held to its own; the
    # headline numbers are those of -1/2||.||^2 (the paper's L2 column), neg_l2 is extra.
    if "separate" in args.kinds:
        s = "neg_sq_l2" if "neg_sq_l2" in sims else "neg_l2" if "neg_l2" in sims else sims[0]
        ours = {
            "direct": _get(rows, s, "separate", "direct"),
            "exact": _get(rows, s, "separate", "exact", big),
            "lse": _get(rows, s, "separate", "lse", big),
            "chance": chance,
            "lse_authors_protocol": _get(rows, s, "separate", "lse_leak", args.leak_bank_size),
            "true_pmi_lse": _get(rows, "-", "truth", "true_pmi_lse", big),
            "bayes": bayes,
        }
        for other in sims:
            if other != s:
                ours[f"direct_{other}"] = _get(rows, other, "separate", "direct")
                ours[f"lse_{other}"] = _get(rows, other, "separate", "lse", big)
                ours[f"exact_{other}"] = _get(rows, other, "separate", "exact", big)
        at_chance = all(_get(rows, x, "separate", "direct") <= chance + 0.03 for x in sims)
        # Held to the paper's M = 100k numbers when the run has that bank, else only to
        # "far above chance".
        matched = [x for x in sims if x in PAPER["separate_mc_100k"]]
        close = big >= 100000 and all(
            min(_get(rows, x, "separate", "lse", big), _get(rows, x, "separate", "exact", big))
            >= PAPER["separate_mc_100k"][x] - 0.05
            for x in matched
        )
        lowest = min(
            min(_get(rows, x, "separate", "lse", big), _get(rows, x, "separate", "exact", big))
            for x in sims
        )
        verdict = (
            "reproduced"
            if at_chance and close and matched
            else "partly"
            if at_chance and lowest >= 0.3
            else "not reproduced"
        )
        paper = {"direct": PAPER["separate_direct"]["neg_sq_l2"], "chance": 0.03}
        paper.update({f"lse_5k_{x}": v for x, v in PAPER["separate_mc_5k"].items()})
        paper.update({f"lse_100k_{x}": v for x, v in PAPER["separate_mc_100k"].items()})
        paper["true_pmi_lse_100k"] = 0.955
        claims.append(
            common.claim(
                "che-separate-direct-chance",
                "With two separately trained B encoders, direct comparison is at chance while "
                "the bank estimators (LogSumExp, exact) still retrieve",
                paper,
                common.rounded(ours),
                verdict,
                critic=s,
                bank_size=big,
                paper_source="authors' RESULTS.md (corrected Fig. 3), per critic",
            )
        )
    # 3. Dot critic: direct fails even with a shared encoder, the bank estimators recover.
    if "dot" in sims and "shared" in args.kinds:
        ours = {
            "direct": _get(rows, "dot", "shared", "direct"),
            "lse": _get(rows, "dot", "shared", "lse", big),
            "exact": _get(rows, "dot", "shared", "exact", big),
        }
        if "oracle" in args.kinds:
            ours["oracle"] = _get(rows, "dot", "oracle", "direct")
        best = max(ours["lse"], ours["exact"])
        verdict = (
            "reproduced"
            if ours["direct"] <= 0.6 and best >= ours["direct"] + 0.2
            else "partly"
            if best > ours["direct"] + 0.05
            else "not reproduced"
        )
        claims.append(
            common.claim(
                "che-dot-direct-fails",
                "With the (unnormalized) dot critic direct comparison fails even with a shared "
                "B encoder, while the bank estimators recover",
                {"direct": 0.39, "lse_5k": 0.87, "lse_100k": 0.96, "oracle": 0.99},
                common.rounded(ours),
                verdict,
                bank_size=big,
                paper_source="authors' RESULTS.md (Fig. 2(b)), 10 seeds",
            )
        )
    return claims


def _claims_text(claims):
    lines = ["Claims:"]
    for item in claims:
        lines.append(f"  {item['id']}: {item['verdict']}")
        lines.append(f"    paper {item['paper']}")
        lines.append(f"    ours  {item['ours']}")
    return "\n".join(lines)


def _table(rows, args):
    lines = [
        f"recall@1 among K = {args.num_candidates} (chance {1 / args.num_candidates:.3f}); "
        f"{args.num_seeds} seed(s) x {args.num_queries} held-out queries; +- 1.96 SE",
        f"{'critic':<10}{'model':<9}{'method':<19}{'bank M':>7}  {'recall@1':>14}  per seed",
    ]
    for r in sorted(rows, key=_order):
        size = "-" if r["bank_size"] is None else str(r["bank_size"])
        lines.append(
            f"{r['similarity']:<10}{r['kind']:<9}{r['method']:<19}{size:>7}  "
            f"{r['recall']:>6.3f} +- {1.96 * r['se']:.3f}  {r['per_seed']}"
        )
    return "\n".join(lines)


def _order(r):
    kinds = {"truth": 0, "shared": 1, "separate": 2, "oracle": 3}
    return (
        r["similarity"] != "-",
        r["similarity"],
        kinds[r["kind"]],
        r["method"],
        r["bank_size"] or 0,
    )


def _csv(rows):
    header = ["similarity", "kind", "method", "bank_size", "recall", "se"]
    lines = [",".join(header)]
    for r in sorted(rows, key=_order):
        lines.append(",".join("" if r[h] is None else str(r[h]) for h in header))
    return "\n".join(lines) + "\n"


def _plot(rows, args, path):
    plt = common.pyplot()
    big = max(args.bank_sizes)
    bars = [
        ("shared", "direct", None, "#9ecae1"),
        ("shared", "lse", big, "#4292c6"),
        ("shared", "exact", big, "#08519c"),
        ("separate", "direct", None, "#fdae6b"),
        ("separate", "lse", big, "#f16913"),
        ("separate", "exact", big, "#a63603"),
        ("oracle", "direct", None, "#31a354"),
    ]
    bars = [b for b in bars if b[0] in args.kinds]
    figure, axis = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(bars)
    x0 = np.arange(len(args.similarities))
    for j, (kind, method, size, color) in enumerate(bars):
        picked = [
            next(
                (
                    r
                    for r in rows
                    if (r["similarity"], r["kind"], r["method"], r["bank_size"])
                    == (s, kind, method, size)
                ),
                None,
            )
            for s in args.similarities
        ]
        means = np.array([np.nan if r is None else r["recall"] for r in picked])
        errors = np.array([0 if r is None else 1.96 * r["se"] for r in picked])
        label = f"{kind} {method}" + ("" if size is None else f" (M={size:,})")
        x = x0 + (j - len(bars) / 2 + 0.5) * width
        axis.bar(x, means, width, yerr=errors, color=color, label=label)
    bayes = _get(rows, "-", "truth", "bayes")
    axis.axhline(bayes, color="k", linestyle="--", label="Bayes ceiling (true PMI)")
    axis.axhline(1 / args.num_candidates, color="grey", linestyle=":", label="chance")
    axis.set_xticks(x0, args.similarities)
    axis.set_ylabel(f"recall@1 (K={args.num_candidates})")
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.set_title("Didactic setting: shared vs separate B encoders vs oracle", fontsize=10)
    common.write_figure(path, figure)


if __name__ == "__main__":
    common.script(main, parse_args, __file__)
