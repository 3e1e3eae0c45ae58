"""The study subcommands of ``pyro-contrast``: ``bridge``, ``compare`` and ``diagnose``.

``bridge`` bridges query embeddings (modality A) to candidate embeddings (modality C) through
a bank of bridge items (modality B) seen by two pretrained contrastive models (A–B and B–C),
with each requested method, and writes a study folder; ``compare`` reprints or recomputes the
metrics table of a study folder; ``diagnose`` checks a study's assumptions. Every error is one
line on stderr with exit code 2.
"""

import argparse
import os
import sys

import numpy as np
import torch

SIMILARITIES = ("cosine", "dot", "neg_sq_l2")
BRIDGE_METHODS = ("exact", "lse", "direct", "analytic")


class _UsageError(ValueError):
    pass


def _one_line_errors(parser):
    """Make argparse report a bad command line in one line (exit code 2), not usage + error."""

    def error(message):
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        sys.exit(2)

    parser.error = error
    return parser


def _guard(name, function):
    def run(args):
        try:
            return function(args)
        except (ValueError, TypeError, KeyError, OSError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            sys.stderr.write(f"pyro-contrast {name}: error: {message}\n")
            return 2

    run.__name__ = function.__name__
    run.__doc__ = function.__doc__
    return run


def _ks(text):
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise _UsageError(f"--ks must be comma-separated integers, got {text!r}") from None
    return ks


def add_parsers(subparsers):
    """Add ``bridge``, ``compare`` and ``diagnose`` to an argparse subparsers action."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ks", default=None, help="recall cut-offs, e.g. 1,5,10 (default 1,5)")
    common.add_argument(
        "--reference", default=None, help="method compared against (default: truth, else exact)"
    )
    common.add_argument(
        "--num-bootstrap",
        type=int,
        default=None,
        help="bootstrap replicates over queries (default 1000)",
    )
    common.add_argument("--seed", type=int, default=None, help="bootstrap seed (default 0)")

    bridge = _one_line_errors(
        subparsers.add_parser(
            "bridge",
            parents=[common],
            help="bridge query and candidate embeddings through a bank",
            description=run_bridge.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    bridge.add_argument("--queries", required=True, help="A embeddings (N x d_ab)")
    bridge.add_argument(
        "--bank", required=True, help="bank file with arrays 'ab' (M x d_ab) and 'bc' (M x d_bc)"
    )
    bridge.add_argument("--candidates", required=True, help="C embeddings (K x d_bc)")
    bridge.add_argument("--truth", default=None, help="optional (N x K) true log ratios")
    bridge.add_argument(
        "--positives",
        default="auto",
        choices=("auto", "aligned", "none"),
        help="true candidates: a 'positives' array in the query or candidate "
        "file, else aligned pairs when N == K (auto); or force one",
    )
    bridge.add_argument("--similarity", default="cosine", choices=SIMILARITIES)
    bridge.add_argument(
        "--temperature-ab",
        type=float,
        default=None,
        help="A-B critic temperature (default: from the files, else 1)",
    )
    bridge.add_argument(
        "--temperature-bc",
        type=float,
        default=None,
        help="B-C critic temperature (default: from the files, else 1)",
    )
    bridge.add_argument(
        "--direct-temperature",
        type=float,
        default=None,
        help="temperature of the direct shortcut (default: the A-B one)",
    )
    bridge.add_argument(
        "--marginal",
        default=None,
        choices=("sphere", "gaussian"),
        help="bridge marginal for method 'analytic'",
    )
    bridge.add_argument(
        "--method",
        default="exact,lse,direct",
        help="comma-separated methods among exact,lse,direct,analytic or 'all' (those that apply)",
    )
    bridge.add_argument("--out", required=True, help="study folder to write")
    bridge.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder, replacing its study files",
    )
    bridge.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bridge.set_defaults(func=_guard("bridge", run_bridge))

    compare = _one_line_errors(
        subparsers.add_parser(
            "compare",
            parents=[common],
            help="reprint or recompute a study's metrics table",
            description=run_compare.__doc__,
        )
    )
    compare.add_argument("study", help="study folder written by 'pyro-contrast bridge'")
    compare.add_argument("--out", default=None, help="also save the table (.json or .nc)")
    compare.add_argument("--force", action="store_true", help="replace an existing --out")
    compare.set_defaults(func=_guard("compare", run_compare))

    diagnose = _one_line_errors(
        subparsers.add_parser(
            "diagnose",
            help="test whether the direct shortcut is justified for a study",
            description=run_diagnose.__doc__,
        )
    )
    diagnose.add_argument("study", help="study folder written by 'pyro-contrast bridge'")
    diagnose.add_argument("--alpha", type=float, default=0.05, help="level of each test")
    diagnose.add_argument(
        "--num-bootstrap",
        type=int,
        default=1000,
        help="bootstrap replicates of the agreement intervals",
    )
    diagnose.add_argument("--seed", type=int, default=0, help="seed of subsampling/bootstrap")
    diagnose.add_argument("--out", default=None, help="also save the report as text")
    diagnose.add_argument("--force", action="store_true", help="replace an existing --out")
    diagnose.set_defaults(func=_guard("diagnose", run_diagnose))
    return subparsers


def _compare_options(args):
    options = {}
    if args.ks is not None:
        options["ks"] = _ks(args.ks)
    if args.reference is not None:
        options["reference"] = args.reference
    if args.num_bootstrap is not None:
        options["num_bootstrap"] = args.num_bootstrap
    if args.seed is not None:
        options["seed"] = args.seed
    return options


def _temperature(flag, flag_name, sources):
    if flag is not None:
        if not flag > 0:
            raise _UsageError(f"{flag_name} must be positive, got {flag}")
        return flag, "command line"
    for where, data, key in sources:
        value = data.scalar(key)
        if value is not None:
            if not value > 0:
                raise _UsageError(f"{data.path}: {key} must be positive, got {value}")
            return value, f"{key} in {where}"
    return 1.0, "default"


def _methods(text, marginal):
    requested = [m.strip() for m in text.split(",") if m.strip()]
    if requested == ["all"]:
        return ["exact", "lse", "direct"] + (["analytic"] if marginal else []), True
    unknown = [m for m in requested if m not in BRIDGE_METHODS]
    if unknown or not requested:
        raise _UsageError(
            f"--method: unknown {unknown or text!r}; choose from {','.join(BRIDGE_METHODS)} or all"
        )
    if "analytic" in requested and marginal is None:
        raise _UsageError("--method analytic needs --marginal sphere|gaussian")
    return list(dict.fromkeys(requested)), False


def _positives(mode, queries, candidates, shape):
    if mode == "none":
        return None, "none"
    if mode == "auto":
        for data in (queries, candidates):
            if "positives" in data.arrays:
                return data.integers("positives").numpy(), f"{data.path} (positives)"
    if shape[0] == shape[1]:
        return np.arange(shape[0]), "aligned pairs"
    if mode == "aligned":
        raise _UsageError(
            f"--positives aligned needs as many queries as candidates, got "
            f"{shape[0]} and {shape[1]}"
        )
    return None, "none"


def _load_bridge(
    queries,
    bank,
    candidates,
    *,
    similarity,
    temperature_ab=None,
    temperature_bc=None,
    direct_temperature=None,
    marginal=None,
):
    """Read the three embedding files and build the A-B-C bridge over them."""
    from pyro_contrast.critics import Critic
    from pyro_contrast.marginals.bank import Bank
    from pyro_contrast.marginals.bridge import Bridge
    from pyro_contrast.studies.io import read_embedding_file

    files = {
        name: read_embedding_file(path)
        for name, path in (("queries", queries), ("bank", bank), ("candidates", candidates))
    }
    bank_ab = files["bank"].embeddings("ab", name=f"{bank}[ab]")
    bank_bc = files["bank"].embeddings("bc", name=f"{bank}[bc]")
    if bank_ab.shape[0] != bank_bc.shape[0]:
        raise _UsageError(
            f"{bank}: 'ab' has {bank_ab.shape[0]} rows but 'bc' has "
            f"{bank_bc.shape[0]}; both must embed the same bank items"
        )
    a = files["queries"].embeddings(dim=bank_ab.shape[1], name=queries)
    c = files["candidates"].embeddings(dim=bank_bc.shape[1], name=candidates)
    t_ab = _temperature(
        temperature_ab,
        "--temperature-ab",
        [
            ("bank file", files["bank"], "temperature_ab"),
            ("query file", files["queries"], "temperature"),
        ],
    )
    t_bc = _temperature(
        temperature_bc,
        "--temperature-bc",
        [
            ("bank file", files["bank"], "temperature_bc"),
            ("candidate file", files["candidates"], "temperature"),
        ],
    )
    if direct_temperature is not None and not direct_temperature > 0:
        raise _UsageError(f"--direct-temperature must be positive, got {direct_temperature}")
    bridge = Bridge(
        [Critic.from_embeddings(similarity, t_ab[0]), Critic.from_embeddings(similarity, t_bc[0])],
        [Bank(views=(bank_ab, bank_bc))],
        marginal=marginal,
        direct_temperature=direct_temperature,
        progress=False,
    )
    return bridge, a, c, files, (t_ab, t_bc)


def run_bridge(args):
    """Bridge A to C through a bank of B items and write a study folder.

    Reads query embeddings (A, in the A-B model's space), a bank file with arrays ``ab`` and
    ``bc`` (the same M bridge items embedded by both models) and candidate embeddings (C, in
    the B-C model's space); a scalar ``temperature`` in the query (candidate) file, or
    ``temperature_ab`` (``temperature_bc``) in the bank file, sets a critic's temperature.
    Prints the comparison table and writes scores.npz, study.json, result.json, table.csv,
    table.txt and plots to --out.
    """
    from pyro_contrast.studies.io import read_embedding_file
    from pyro_contrast.studies.study import Study

    out = os.path.abspath(args.out)
    if os.path.isdir(out) and os.listdir(out) and not args.force:
        raise _UsageError(f"{args.out} is not empty (use --force to replace its study files)")
    options = _compare_options(args)
    methods, skip_inapplicable = _methods(args.method, args.marginal)
    bridge, a, c, files, temperatures = _load_bridge(
        args.queries,
        args.bank,
        args.candidates,
        similarity=args.similarity,
        temperature_ab=args.temperature_ab,
        temperature_bc=args.temperature_bc,
        direct_temperature=args.direct_temperature,
        marginal=args.marginal,
    )
    (t_ab, t_ab_source), (t_bc, t_bc_source) = temperatures
    shape = (a.shape[0], c.shape[0])
    truth = None
    if args.truth is not None:
        truth = read_embedding_file(args.truth).embeddings(name=args.truth)
        if tuple(truth.shape) != shape:
            raise _UsageError(
                f"{args.truth} must have shape (queries, candidates) = {shape}, "
                f"got {tuple(truth.shape)}"
            )
        truth = truth.double().numpy()
    positives, positives_source = _positives(
        args.positives, files["queries"], files["candidates"], shape
    )
    scores, skipped = {}, {}
    with torch.no_grad():
        for method in methods:
            if method == "direct" and a.shape[1] != c.shape[1]:
                reason = (
                    f"queries ({a.shape[1]}-d) and candidates ({c.shape[1]}-d) live in "
                    "different spaces"
                )
                if not skip_inapplicable:
                    raise _UsageError(f"--method direct: {reason}")
                skipped[method] = reason
                continue
            scores[method] = bridge.log_ratio(a, c, method=method).double().numpy()
    metadata = {
        "command": "bridge",
        "files": {
            "queries": os.path.abspath(args.queries),
            "bank": os.path.abspath(args.bank),
            "candidates": os.path.abspath(args.candidates),
            "truth": None if args.truth is None else os.path.abspath(args.truth),
        },
        "similarity": args.similarity,
        "temperature_ab": t_ab,
        "temperature_ab_source": t_ab_source,
        "temperature_bc": t_bc,
        "temperature_bc_source": t_bc_source,
        "direct_temperature": args.direct_temperature,
        "marginal": args.marginal,
        "num_queries": shape[0],
        "num_candidates": shape[1],
        "bank_size": len(bridge.banks[0]),
        "positives": positives_source,
        "skipped_methods": skipped,
        "compare_options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
    }
    study = Study(scores, positives=positives, truth=truth, metadata=metadata)
    result = study.compare(**options)
    study.save(out, result=result, overwrite=args.force, plots=not args.no_plots)
    print(
        f"temperatures: A-B {t_ab:g} ({t_ab_source}), B-C {t_bc:g} ({t_bc_source}); "
        f"bank of {len(bridge.banks[0])}; true candidates: {positives_source}"
    )
    for method, reason in skipped.items():
        print(f"skipped {method}: {reason}")
    print(result.to_string())
    print(f"study written to {args.out}")
    return 0


def run_compare(args):
    """Reprint a study folder's metrics table, or recompute it with new options
    (--ks, --reference, --num-bootstrap, --seed)."""
    from pyro_contrast.studies.study import Study

    study = Study.load(args.study)
    options = _compare_options(args)
    result = study.result
    if options or result is None:
        saved = dict(study.metadata.get("compare_options", {}))
        result = study.compare(**{**saved, **options})
    print(result.to_string())
    if args.out is not None:
        result.save(args.out, overwrite=args.force)
    return 0


def run_diagnose(args):
    """Test whether the direct shortcut is justified for a study (pc.diagnose).

    Rebuilds the study's bridge from the embedding files and critic settings recorded in its
    study.json, runs the assumption tests and the direct-vs-exact agreement, and prints the
    report (exit code 0 whatever the verdict).
    """
    from pyro_contrast.diagnostics import diagnose
    from pyro_contrast.studies.study import Study

    study = Study.load(args.study)
    meta = study.metadata
    files = meta.get("files") or {}
    if meta.get("command") != "bridge" or not all(
        files.get(k) for k in ("queries", "bank", "candidates")
    ):
        raise _UsageError(
            f"{args.study} was not written by 'pyro-contrast bridge': "
            "no embedding files to diagnose"
        )
    bridge, a, c, _, _ = _load_bridge(
        files["queries"],
        files["bank"],
        files["candidates"],
        similarity=meta["similarity"],
        temperature_ab=meta["temperature_ab"],
        temperature_bc=meta["temperature_bc"],
        direct_temperature=meta.get("direct_temperature"),
        marginal=meta.get("marginal"),
    )
    if a.shape[1] != c.shape[1]:
        raise _UsageError(
            f"queries ({a.shape[1]}-d) and candidates ({c.shape[1]}-d) live in "
            "different spaces: there is no direct shortcut to diagnose"
        )
    report = diagnose(
        bridge, a, c, alpha=args.alpha, num_bootstrap=args.num_bootstrap, generator=args.seed
    )
    text = report.summary()
    print(text)
    if args.out is not None:
        from pyro_contrast._files import atomic_write

        atomic_write(
            args.out, lambda handle: handle.write((text + "\n").encode()), overwrite=args.force
        )
    return 0


def main(argv=None):
    """Run one study subcommand without the package's main dispatcher (for scripts, tests).

    >>> main(["compare", "/nonexistent"])
    2
    """
    parser = _one_line_errors(argparse.ArgumentParser(prog="pyro-contrast"))
    add_parsers(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (code 2) and --help (code 0)
        return stop.code
    return args.func(args)
