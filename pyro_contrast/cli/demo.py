"""``pyro-contrast demo``: bridge two modalities that were never paired, against the truth.

On the linear-Gaussian chain A - B - C, whose likelihood ratio p(c|a)/p(c) is known exactly,
the demo trains contrastive models on (A, B) pairs and, separately, (B, C) pairs - never an
(A, C) pair - in two scenes:

- shared: critics A-B and B-C share one B encoder;
- separate: two separately trained models, each with its own B encoder (as when bridging
  two pretrained models, e.g. image-text and text-audio, through text).

Each held-out query from A is scored against K candidates from C (its true partner among
them) by the truth, the exact bridge over a bank of B items (C normalized over a bank of C
items), the LogSumExp estimator (lse) and the direct shortcut (comparing A and C embeddings).
It prints one table per scene, pyro_contrast.diagnose's verdict on the shortcut and a
plain-language verdict, and writes OUT/shared and OUT/separate (study folders, for
'pyro-contrast compare' and 'diagnose') and OUT/results.json.
"""

import argparse
import datetime
import json
import math
import os
import shutil
import textwrap
import time

import torch

from pyro_contrast import __version__
from pyro_contrast.cli import _common, _inputs, _output, _scenes, bridge, verdict
from pyro_contrast.cli._common import UsageError
from pyro_contrast.studies.compare import MAX_BOOTSTRAP
from pyro_contrast.studies.study import Study
from pyro_contrast.training.losses import LOSSES

NAME = "demo"
DEFAULTS = dict(
    seed=0,
    similarity="cosine",
    num_train=20000,
    num_queries=2048,
    num_candidates=32,
    bank_size=4096,
    c_bank_size=4096,
    steps=1000,
    batch_size=256,
    lr=3e-3,
    loss="symmetric_infonce",
    hidden=64,
    embedding_dim=16,
    num_bootstrap=500,
)
# Beyond these a run would not finish on a laptop, or would exhaust its memory: refused
# before any work (issue 11: absurd numbers must never hang).
LIMITS = dict(
    num_train=10_000_000,
    num_queries=1_000_000,
    num_candidates=4096,
    bank_size=10_000_000,
    c_bank_size=10_000_000,
    steps=1_000_000,
    batch_size=65_536,
    hidden=4096,
    embedding_dim=4096,
    num_bootstrap=MAX_BOOTSTRAP,
)
VALIDATION = 0.1  # held-out fraction of the training pairs (fit's early-stopping monitor)
TABLE_METRICS = ("recall@1", "recall@5", "mrr", "kl", "spearman", "top1_agreement")
METHODS = ("exact", "lse", "direct")


def add_parser(subparsers):
    parser = _common.one_line_errors(
        subparsers.add_parser(
            NAME,
            help="bridge A and C through B on a simulator with exact truth, in two scenes",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    count = _common.integer
    parser.add_argument(
        "--out",
        default=None,
        help="results folder (default: a new ./pyro-contrast-demo-<time>)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out as a whole")
    parser.add_argument("--seed", type=_common.seed, default=DEFAULTS["seed"])
    parser.add_argument(
        "--similarity",
        default=DEFAULTS["similarity"],
        choices=_inputs.SIMILARITIES,
        help="the critics' similarity (cosine, as CLIP-like models)",
    )
    # (flag, smallest value, help); the largest is LIMITS', the default DEFAULTS'
    sizes = [
        (
            "--num-train",
            2,
            "training pairs per model: (A, B) pairs and, separately drawn, (B, C) pairs",
        ),
        ("--num-queries", 2, None),
        ("--num-candidates", 2, "K: candidates per query, one of them the true partner"),
        ("--bank-size", 1, "M: B items marginalized over"),
        ("--c-bank-size", 1, "C items of exact's normalizer (a few hundred or more)"),
        ("--steps", 1, None),
        ("--batch-size", 2, None),
    ]
    training = [
        ("--hidden", 1, "hidden units of the MLP encoders"),
        ("--embedding-dim", 1, None),
        ("--num-bootstrap", 0, "bootstrap replicates of the intervals"),
    ]

    def add_counts(options):
        for flag, low, text in options:
            key = flag.removeprefix("--").replace("-", "_")
            parser.add_argument(
                flag, type=count(low, LIMITS[key]), default=DEFAULTS[key], help=text
            )

    add_counts(sizes)
    parser.add_argument("--lr", type=_common.positive_float, default=DEFAULTS["lr"])
    parser.add_argument(
        "--loss",
        default=DEFAULTS["loss"],
        choices=sorted(LOSSES),
        metavar="LOSS",
        help=f"training loss, one of {', '.join(sorted(LOSSES))}",
    )
    add_counts(training)
    parser.add_argument(
        "--raw-calibration",
        action="store_true",
        help="fit calibration on raw scores (default: centred per query)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=_common.guard(NAME, run))
    return parser


def check_settings(args):
    """Refuse combinations that cannot run, before any work (one-line errors)."""
    if args.loss not in LOSSES:  # argparse checks too; kept for programmatic callers
        raise UsageError(f"--loss {args.loss!r} is unknown; choose one of {sorted(LOSSES)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive finite number, got {args.lr}")
    held_out = int(round(VALIDATION * args.num_train))
    if held_out < 2:
        raise UsageError(
            f"--num-train {args.num_train} is too small: it needs at least "
            f"{math.ceil(1.5 / VALIDATION)} pairs (10% are held out to monitor training)"
        )
    if args.batch_size > args.num_train - held_out:
        raise UsageError(
            f"--batch-size {args.batch_size} exceeds the {args.num_train - held_out} training "
            f"pairs left by --num-train {args.num_train}"
        )
    if args.num_queries < args.num_candidates or args.num_queries % args.num_candidates:
        raise UsageError(
            f"--num-queries {args.num_queries} must be a multiple of --num-candidates "
            f"{args.num_candidates} (queries are scored in groups of K)"
        )
    args.validation = VALIDATION
    return args


def default_out():
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out, suffix = f"pyro-contrast-demo-{stamp}", 1
    while os.path.lexists(out):
        out, suffix = f"pyro-contrast-demo-{stamp}-{suffix}", suffix + 1
    return out


def run(args):
    """Run the demo; returns the exit code (2 with a one-line message on bad input)."""
    check_settings(args)
    out = _output.check_out(args.out if args.out is not None else default_out(), args.force)
    started = time.perf_counter()
    # The demo's tensors are small (batches of 256 x 64): a second OpenMP thread only adds
    # synchronization, 16x slower training measured on a loaded 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _output.staged_folder(out, force=args.force) as stage:
            summary = run_scenes(args, stage)
            summary["seconds"] = {"total": round(time.perf_counter() - started, 2)}
            printed = summary.pop("_printed")
            _write_json(stage / "results.json", summary)
    finally:
        torch.set_num_threads(threads)
    for lines in printed:
        print("\n".join(lines) + "\n")
    shown = args.out if args.out is not None else os.path.relpath(out)
    width = max(80, shutil.get_terminal_size((100, 24)).columns)
    done = (
        f"Done in {summary['seconds']['total']:.0f} s. Wrote {shown}: shared/ and separate/ "
        "(study folders) and results.json. Next:"
    )
    print("\n".join(textwrap.wrap(done, width)))
    print(f"  pyro-contrast compare {os.path.join(shown, 'shared')}")
    print(f"  pyro-contrast diagnose {os.path.join(shown, 'separate')}")
    return 0


def run_scenes(args, stage):
    """Train, score, compare and diagnose both scenes; write their study folders into
    ``stage``; returns the summary (``results.json``'s content) with the printed lines."""
    from pyro_contrast.cli import study as study_commands

    data = _scenes.draw(args)
    width = max(80, shutil.get_terminal_size((100, 24)).columns)
    summary = {"version": __version__, "settings": settings_dict(args), "scenes": {}}
    printed = []
    options = dict(num_bootstrap=args.num_bootstrap, seed=args.seed)
    if args.raw_calibration:
        options["center_calibration"] = False
    message = _inputs.normalizer_note(args.num_candidates, args.c_bank_size, flag="--c-bank-size")
    if message:
        _common.note(NAME, message)
    for index, name in enumerate(_scenes.SCENES):
        if not args.quiet:
            _common.note(NAME, f"training scene {index + 1}/2 ({name}) ...")
        scene = _scenes.train(name, data, args, index)
        inputs = scene.inputs
        bridge_ = _inputs.build_bridge(inputs, args.similarity)
        scores = _inputs.score(
            bridge_, inputs.queries, inputs.candidates, METHODS, args.num_candidates
        )
        report = study_commands.diagnose_study(
            bridge_,
            inputs,
            args.num_candidates,
            **{k: study_commands.DIAGNOSE_DEFAULTS[k] for k in ("alpha", "num_bootstrap")},
            seed=study_commands.DIAGNOSE_DEFAULTS["seed"],
        )
        folder = stage / name
        metadata = bridge.study_metadata(
            command=NAME,
            files={k: f"inputs/{v}" for k, v in _scenes.INPUT_FILES.items()},
            inputs=inputs,
            similarity=args.similarity,
            direct_temperature=None,
            marginal=None,
            group_size=args.num_candidates,
            positives="aligned within groups",
            skipped={},
            options=options,
            scene=name,
            description=scene.description,
        )
        study = Study(scores, positives=data.positives, truth=data.truth, metadata=metadata)
        result = study.compare(**options)
        study.save(folder, result=result, plots=not args.no_plots)
        _scenes.save_inputs(scene, folder / "inputs", data)
        direct_note = None
        if not inputs.shared_bank:
            direct_note = (
                "A and C are embedded by two separately trained models, so their embeddings "
                "live in unrelated spaces"
            )
        sentences = verdict.scene_verdict(
            scores,
            data.truth,
            data.positives,
            report=report,
            direct_note=direct_note,
            num_bootstrap=args.num_bootstrap,
            seed=args.seed,
        )
        summary["scenes"][name] = _scene_summary(scene, result, report, sentences)
        printed.append(_scene_lines(index, scene, result, report, sentences, args, width))
    summary["_printed"] = printed
    return summary


def _scene_lines(index, scene, result, report, sentences, args, width):
    inputs = scene.inputs
    t_ab, t_bc = inputs.temperatures["ab"][0], inputs.temperatures["bc"][0]
    lines = textwrap.wrap(f"Scene {index + 1}/2: {scene.name} - {scene.description}", width)
    lines += textwrap.wrap(
        f"(trained in {scene.seconds:.0f} s; temperatures A-B {t_ab:.2g}, B-C {t_bc:.2g}; "
        f"banks of {inputs.bank_ab.shape[0]} B and {inputs.c_bank.shape[0]} C items)",
        width,
    )
    lines += result.to_string(metrics=TABLE_METRICS, width=width).splitlines()
    lines += verdict.format_verdict(scene.name, sentences, width)
    return lines


def _scene_summary(scene, result, report, sentences):
    estimates, intervals = {}, {}
    for method in result.methods:
        estimates[method], intervals[method] = {}, {}
        rows = result.table[result.table["method"] == method]
        for row in rows.itertuples():
            estimates[method][row.metric] = _finite(row.estimate)
            intervals[method][row.metric] = [_finite(row.lower), _finite(row.upper)]
    return {
        "description": scene.description,
        "estimates": estimates,
        "intervals": intervals,
        "diagnosis": {
            "shortcut_justified": bool(report.shortcut_justified),
            "failed_assumptions": list(report.failed_assumptions),
            "top1_agreement": _finite(report.agreement.top1_agreement),
        },
        "verdict": sentences,
        "temperatures": {k: v[0] for k, v in scene.inputs.temperatures.items()},
        "final_train_loss": _finite(scene.final_loss),
        "seconds": round(scene.seconds, 2),
    }


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def settings_dict(args):
    return {key: getattr(args, key) for key in DEFAULTS}


def _write_json(path, payload):
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
