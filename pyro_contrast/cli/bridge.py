"""``pyro-contrast bridge``: bridge query embeddings to candidate embeddings through a bank.

Reads query embeddings (modality A, in the A–B model's space), a bank file with arrays ``ab``
and ``bc`` (the same M bridge items embedded by both models) and candidate embeddings (C, in
the B–C model's space); ``--c-bank`` gives C items for the exact bridge's normalizer. A scalar
``temperature`` in the query (candidate) file, or ``temperature_ab`` (``temperature_bc``) in
the bank file, sets a critic's temperature. Without ``--method`` every method that applies is
run and the others are named with the reason. Prints the comparison table and writes a study
folder (``scores.npz``, ``study.json``, ``result.json``, ``table.csv``, ``table.txt``, plots).
"""

import argparse
import os

import numpy as np
import torch

from pyro_contrast.cli import _common, _inputs, _output
from pyro_contrast.cli._common import UsageError
from pyro_contrast.studies.compare import MAX_BOOTSTRAP
from pyro_contrast.studies.io import read_embedding_file
from pyro_contrast.studies.study import Study

NAME = "bridge"


def compare_arguments():
    """Options shared by ``bridge`` and ``compare``: how the table is computed."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--ks", type=_common.ks, default=None, help="recall cut-offs, e.g. 1,5,10 (default 1,5)"
    )
    common.add_argument(
        "--reference", default=None, help="method compared against (default: truth, else exact)"
    )
    common.add_argument(
        "--num-bootstrap",
        type=_common.integer(0, MAX_BOOTSTRAP),
        default=None,
        help="bootstrap replicates over queries (default 1000)",
    )
    common.add_argument(
        "--seed", type=_common.seed, default=None, help="bootstrap seed (default 0)"
    )
    common.add_argument(
        "--raw-calibration",
        action="store_true",
        default=None,
        help="fit calibration on raw scores (default: centred per query, since a critic is "
        "defined only up to a term in the query)",
    )
    return common


def compare_options(args):
    options = {}
    if args.ks is not None:
        options["ks"] = args.ks
    if args.reference is not None:
        options["reference"] = args.reference
    if args.num_bootstrap is not None:
        options["num_bootstrap"] = args.num_bootstrap
    if args.seed is not None:
        options["seed"] = args.seed
    if args.raw_calibration:
        options["center_calibration"] = False
    return options


def add_parser(subparsers, common):
    parser = _common.one_line_errors(
        subparsers.add_parser(
            NAME,
            parents=[common],
            help="bridge query and candidate embeddings through a bank",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    parser.add_argument("--queries", required=True, help="A embeddings (N x d_ab)")
    parser.add_argument(
        "--bank", required=True, help="bank file with arrays 'ab' (M x d_ab) and 'bc' (M x d_bc)"
    )
    parser.add_argument("--candidates", required=True, help="C embeddings (K x d_bc)")
    parser.add_argument(
        "--c-bank",
        default=None,
        help="C embeddings (L x d_bc) that normalize exact's B-C conditional (default: the "
        "candidates; a few hundred or more items give a stable normalizer)",
    )
    parser.add_argument("--truth", default=None, help="optional (N x K) true log ratios")
    parser.add_argument(
        "--positives",
        default="auto",
        metavar="auto|aligned|none|FILE",
        help="true candidates: a file with an integer array; 'auto' (default) takes a "
        "'positives' array from the query or candidate file, else aligned pairs when N == K "
        "(or within groups); 'aligned' and 'none' force those",
    )
    parser.add_argument(
        "--group-size",
        type=_common.integer(2),
        default=None,
        help="score each query against the candidates of its own group of this size "
        "(aligned files; query n's partner is candidate n)",
    )
    parser.add_argument("--similarity", default="cosine", choices=_inputs.SIMILARITIES)
    parser.add_argument(
        "--temperature-ab",
        type=_common.positive_float,
        default=None,
        help="A-B critic temperature (default: from the files, else 1 with a warning)",
    )
    parser.add_argument(
        "--temperature-bc",
        type=_common.positive_float,
        default=None,
        help="B-C critic temperature (default: from the files, else 1 with a warning)",
    )
    parser.add_argument(
        "--direct-temperature",
        type=_common.positive_float,
        default=None,
        help="temperature of the direct shortcut (default: the A-B one)",
    )
    parser.add_argument(
        "--marginal",
        default=None,
        choices=_inputs.MARGINALS,
        help="assumed bank marginal, for method 'analytic'",
    )
    parser.add_argument(
        "--method",
        default=None,
        help="comma-separated methods among exact,lse,direct,analytic (default: every "
        "method that applies; the others are named)",
    )
    parser.add_argument("--out", required=True, help="study folder to write")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing study folder as a whole"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.set_defaults(func=_common.guard(NAME, run))
    return parser


def run(args):
    """Run ``bridge``; returns the exit code."""
    out = _output.check_out(args.out, args.force)
    options = compare_options(args)
    inputs = _inputs.read_inputs(args.queries, args.bank, args.candidates, args.c_bank)
    _inputs.check_groups(inputs, args.group_size)
    num_queries = inputs.queries.shape[0]
    num_candidates = args.group_size or inputs.candidates.shape[0]
    _common.check_ks(args.ks, num_candidates)
    _inputs.resolve_temperatures(inputs, args.temperature_ab, args.temperature_bc)
    methods, skipped = _inputs.select_methods(args.method, inputs, args.similarity, args.marginal)
    shape = (num_queries, num_candidates)
    truth = None
    if args.truth is not None:
        truth = read_embedding_file(args.truth).embeddings(name=args.truth)
        if tuple(truth.shape) != shape:
            raise UsageError(
                f"{args.truth} must have shape (queries, candidates) = {shape}, "
                f"got {tuple(truth.shape)}"
            )
        truth = truth.double().numpy()
    positives, positives_source = _positives(args.positives, inputs, shape, args.group_size)
    known = methods + (["truth"] if truth is not None else [])
    if args.reference is not None and args.reference not in known:
        raise UsageError(f"unknown reference {args.reference!r}; methods are {sorted(known)}")
    _warn_default_temperatures(inputs)
    if "exact" in methods:
        message = _inputs.study_normalizer_note(inputs, args.group_size)
        if message:
            _common.note(NAME, message)

    bridge = _inputs.build_bridge(
        inputs,
        args.similarity,
        direct_temperature=args.direct_temperature,
        marginal=args.marginal,
    )
    scores = _inputs.score(bridge, inputs.queries, inputs.candidates, methods, args.group_size)
    files = {
        "queries": args.queries,
        "bank": args.bank,
        "candidates": args.candidates,
        "c_bank": args.c_bank,
        "truth": args.truth,
    }
    metadata = study_metadata(
        command=NAME,
        files={k: None if v is None else os.path.abspath(v) for k, v in files.items()},
        inputs=inputs,
        similarity=args.similarity,
        direct_temperature=args.direct_temperature,
        marginal=args.marginal,
        group_size=args.group_size,
        positives=positives_source,
        skipped=skipped,
        options=options,
    )
    study = Study(scores, positives=positives, truth=truth, metadata=metadata)
    result = study.compare(**options)
    study.save(out, result=result, overwrite=args.force, plots=not args.no_plots)
    (t_ab, t_ab_source), (t_bc, t_bc_source) = inputs.temperatures.values()
    print(
        f"temperatures: A-B {t_ab:g} ({t_ab_source}), B-C {t_bc:g} ({t_bc_source}); "
        f"bank of {inputs.bank_ab.shape[0]}; C normalizer: {_normalizer(inputs, args.group_size)}"
        f"; true candidates: {positives_source}"
    )
    for method, reason in skipped.items():
        print(f"skipped {method}: {reason}")
    print(result.to_string())
    print(f"study written to {args.out}")
    return 0


def study_metadata(
    *,
    command,
    files,
    inputs,
    similarity,
    direct_temperature,
    marginal,
    group_size,
    positives,
    skipped,
    options,
    **extra,
):
    """What ``study.json`` records: enough for ``diagnose`` to rebuild the bridge."""
    (t_ab, t_ab_source), (t_bc, t_bc_source) = inputs.temperatures.values()
    return {
        "command": command,
        "files": files,
        "similarity": similarity,
        "temperature_ab": t_ab,
        "temperature_ab_source": t_ab_source,
        "temperature_bc": t_bc,
        "temperature_bc_source": t_bc_source,
        "direct_temperature": direct_temperature,
        "marginal": marginal,
        "num_queries": inputs.queries.shape[0],
        "num_candidates": group_size or inputs.candidates.shape[0],
        "group_size": group_size,
        "bank_size": inputs.bank_ab.shape[0],
        "c_bank_size": None if inputs.c_bank is None else inputs.c_bank.shape[0],
        "positives": positives,
        "skipped_methods": skipped,
        "compare_options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        **extra,
    }


def _normalizer(inputs, group_size):
    if inputs.c_bank is not None:
        return f"C bank of {inputs.c_bank.shape[0]}"
    return f"the {group_size or inputs.candidates.shape[0]} candidates"


def _warn_default_temperatures(inputs):
    for name, flag in (("ab", "--temperature-ab"), ("bc", "--temperature-bc")):
        if inputs.temperatures[name][1] == "default":
            _common.note(
                NAME,
                f"WARNING: no temperature for the {name[0].upper()}-{name[1].upper()} critic "
                f"in the files or on the command line; using 1, which is almost surely wrong "
                f"for a pretrained model (CLIP-like models use about 0.01 = 1/logit_scale): "
                f"pass {flag}",
            )


def _positives(mode, inputs, shape, group_size):
    if mode == "none":
        return None, "none"
    if mode not in ("auto", "aligned"):
        data = read_embedding_file(mode)
        integer = [k for k, v in data.arrays.items() if _is_integer(v)]
        key = "positives" if "positives" in integer else (integer[0] if len(integer) == 1 else None)
        if key is None:
            raise UsageError(
                f"--positives {mode}: expected one integer array (or one named 'positives'), "
                f"found {sorted(data.arrays) or 'none'}"
            )
        return _check_positives(data.integers(key).numpy(), shape, mode), f"{mode} ({key})"
    if mode == "auto":
        for data in (inputs.files["queries"], inputs.files["candidates"]):
            if "positives" in data.arrays:
                positives = _check_positives(data.integers("positives").numpy(), shape, data.path)
                return positives, f"{data.path} (positives)"
    if group_size is not None:
        return np.tile(np.arange(group_size), shape[0] // group_size), "aligned within groups"
    if shape[0] == shape[1]:
        return np.arange(shape[0]), "aligned pairs"
    if mode == "aligned":
        raise UsageError(
            f"--positives aligned needs as many queries as candidates, got "
            f"{shape[0]} and {shape[1]}"
        )
    return None, "none"


def _check_positives(positives, shape, where):
    if positives.shape != shape[:1]:
        raise UsageError(
            f"{where}: positives must have one entry per query ({shape[0]}), "
            f"got shape {positives.shape}"
        )
    bad = np.flatnonzero((positives < 0) | (positives >= shape[1]))
    if bad.size:
        raise UsageError(
            f"{where}: positives out of range [0, {shape[1]}): "
            f"positives[{bad[0]}] = {positives[bad[0]]}"
        )
    return positives


def _is_integer(value):
    if isinstance(value, np.ndarray):
        return np.issubdtype(value.dtype, np.integer)
    return not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
