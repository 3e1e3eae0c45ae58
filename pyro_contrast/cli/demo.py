"""``pyro-contrast demo``: the A – B – C bridge every way, against the exact truth.

On the linear-Gaussian chain (whose bridged likelihood ratio is known in closed form) the
demo trains critics A–B and B–C that share one B encoder (the "unconscious" setting of Che &
Eysenbach) on (A, B) and (B, C) pairs only, then scores held-out triplets: each query from A
against K candidates from C, one of which is its true partner. It compares the truth, the
exact bridge over a bank of B samples, the LogSumExp estimator and the direct shortcut.
"""

import datetime
import json
import os
import sys
import time

import torch

from pyro_contrast._files import atomic_write

DEFAULTS = dict(
    seed=0,
    num_train=20000,
    num_queries=2048,
    num_candidates=32,
    bank_size=4096,
    steps=1500,
    batch_size=256,
    lr=3e-3,
    loss="symmetric_infonce",
    similarity="neg_sq_l2",
    num_bootstrap=500,
)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="train critics on the linear-Gaussian chain and compare truth, exact, lse, direct",
        description=__doc__,
        formatter_class=lambda prog: __import__("argparse").RawDescriptionHelpFormatter(prog),
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results folder (default: a new folder "
        "./pyro-contrast-demo-<time>); a non-empty folder needs --force",
    )
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument(
        "--num-train",
        type=int,
        default=DEFAULTS["num_train"],
        help="training triplets (each critic sees its pair of modalities)",
    )
    parser.add_argument("--num-queries", type=int, default=DEFAULTS["num_queries"])
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=DEFAULTS["num_candidates"],
        help="K: candidates per query, one of them the true partner",
    )
    parser.add_argument(
        "--bank-size",
        type=int,
        default=DEFAULTS["bank_size"],
        help="M: unpaired B samples marginalized over (and C samples for the normalizer)",
    )
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--loss", default=DEFAULTS["loss"])
    parser.add_argument(
        "--similarity", default=DEFAULTS["similarity"], choices=("dot", "cosine", "neg_sq_l2")
    )
    parser.add_argument("--num-bootstrap", type=int, default=DEFAULTS["num_bootstrap"])
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args):
    """Run the demo; returns the exit code (2 with a one-line message on bad input)."""
    try:
        out = _check_args(args)
    except ValueError as error:
        sys.stderr.write(f"pyro-contrast demo: error: {error}\n")
        return 2
    summary = run_demo(args, out)
    print(summary["table"])
    print(f"\nwrote {out}")
    return 0


def run_demo(args, out):
    """Train, score and write the results folder; returns the summary dict."""
    import pyro_contrast as pc
    from pyro_contrast.studies.compare import compare
    from pyro_contrast.studies.metrics import grouped_candidates
    from pyro_contrast.studies.study import Study
    from pyro_contrast.training.fit import fit

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    chain = pc.sim.LinearGaussianChain(dim_a=8, dim_b=4, dim_c=8, seed=args.seed)
    a, b, c = chain.sample(args.num_train)
    dim = 8
    encoder_b = torch.nn.Linear(chain.dim_b, dim)
    critic_ab = pc.Critic(
        torch.nn.Linear(chain.dim_a, dim),
        encoder_b,
        args.similarity,
        temperature=1.0,
        learn_temperature=True,
    )
    critic_bc = pc.Critic(
        encoder_b,
        torch.nn.Linear(chain.dim_c, dim),
        args.similarity,
        temperature=1.0,
        learn_temperature=True,
    )
    history = fit(
        (critic_ab, critic_bc),
        (a, b, c),
        loss=args.loss,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        mode="shared",
        progress=not args.quiet,
    )
    trained = time.perf_counter()

    # Held-out data: query/candidate triplets, plus unpaired banks of B and of C.
    a_test, _, c_test = chain.sample(args.num_queries)
    _, bank_b, _ = chain.sample(args.bank_size)
    _, _, bank_c = chain.sample(args.bank_size)
    bridge = pc.Bridge([critic_ab, critic_bc], [bank_b], target_bank=bank_c)
    with torch.no_grad():
        full = {"truth": chain.log_ratio(a_test, c_test).float()}
        for method in ("exact", "lse", "direct"):
            full[method] = bridge.log_ratio(a_test, c_test, method=method)
    # Queries are scored in groups of K: the group's C items are its candidates.
    scores = {name: grouped_candidates(value, args.num_candidates) for name, value in full.items()}
    truth = scores.pop("truth")
    positives = torch.arange(args.num_candidates).repeat(args.num_queries // args.num_candidates)
    result = compare(
        scores, truth=truth, positives=positives, num_bootstrap=args.num_bootstrap, seed=args.seed
    )
    scored = time.perf_counter()

    study = Study(
        scores,
        positives=positives,
        truth=truth,
        metadata={"source": "pyro-contrast demo", "settings": _settings(args)},
    )
    study.save(out, result=result, overwrite=True, plots=not args.no_plots)
    summary = {
        "settings": _settings(args),
        "table": result.to_string(),
        "estimates": {
            m: {k: result.estimate(m, k) for k in result.metrics} for m in result.methods
        },
        "temperatures": {"ab": critic_ab.temperature.item(), "bc": critic_bc.temperature.item()},
        "final_train_loss": float(history.to_pandas()["train_loss"].iloc[-1]),
        "seconds": {
            "train": trained - started,
            "score": scored - trained,
            "total": time.perf_counter() - started,
        },
    }
    _write_json(os.path.join(out, "results.json"), summary)
    return summary


def _check_args(args):
    for name in ("num_train", "num_queries", "num_candidates", "bank_size", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer")
    if args.num_candidates < 2:
        raise ValueError("--num-candidates must be at least 2")
    if args.num_queries < args.num_candidates:
        raise ValueError("--num-queries must be at least --num-candidates")
    if args.batch_size > args.num_train:
        raise ValueError("--batch-size cannot exceed --num-train")
    if args.num_bootstrap < 0:
        raise ValueError("--num-bootstrap must be non-negative")
    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = f"pyro-contrast-demo-{stamp}"
        suffix = 1
        while os.path.exists(out):
            out, suffix = f"pyro-contrast-demo-{stamp}-{suffix}", suffix + 1
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not args.force:
        raise ValueError(f"--out {out} is not empty; choose another folder or pass --force")
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f"--out {out}: parent folder does not exist")
    return out


def _settings(args):
    return {key: getattr(args, key) for key in DEFAULTS}


def _write_json(path, payload):
    data = json.dumps(payload, indent=2).encode()
    atomic_write(path, lambda handle: handle.write(data), overwrite=True)
