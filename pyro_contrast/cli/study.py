"""The study subcommands of ``pyro-contrast``: ``bridge``, ``compare`` and ``diagnose``.

``bridge`` (:mod:`pyro_contrast.cli.bridge`) writes a study folder from embedding files;
``compare`` reprints or recomputes the metrics table of a study folder; ``diagnose`` checks
whether the direct shortcut is justified for a study. Every error is one line on stderr with
exit code 2.
"""

import argparse
import os

from pyro_contrast._files import atomic_write
from pyro_contrast.cli import _common, _inputs, bridge
from pyro_contrast.cli._common import UsageError
from pyro_contrast.diagnostics import diagnose
from pyro_contrast.studies.study import Study

DIAGNOSE_DEFAULTS = dict(alpha=0.05, num_bootstrap=1000, seed=0)


def add_parsers(subparsers):
    """Add ``bridge``, ``compare`` and ``diagnose`` to an argparse subparsers action."""
    common = bridge.compare_arguments()
    bridge.add_parser(subparsers, common)

    compare = _common.one_line_errors(
        subparsers.add_parser(
            "compare",
            parents=[common],
            help="reprint or recompute a study's metrics table",
            description=run_compare.__doc__,
        )
    )
    compare.add_argument("study", help="study folder written by 'pyro-contrast bridge' or 'demo'")
    compare.add_argument("--out", default=None, help="also save the table (.json or .nc)")
    compare.add_argument("--force", action="store_true", help="replace an existing --out")
    compare.set_defaults(func=_common.guard("compare", run_compare))

    parser = _common.one_line_errors(
        subparsers.add_parser(
            "diagnose",
            help="test whether the direct shortcut is justified for a study",
            description=run_diagnose.__doc__,
        )
    )
    parser.add_argument("study", help="study folder written by 'pyro-contrast bridge' or 'demo'")
    parser.add_argument(
        "--alpha",
        type=_common.probability,
        default=DIAGNOSE_DEFAULTS["alpha"],
        help="level of each test",
    )
    parser.add_argument(
        "--num-bootstrap",
        type=_common.integer(0, 100_000),
        default=DIAGNOSE_DEFAULTS["num_bootstrap"],
        help="bootstrap replicates of the agreement intervals",
    )
    parser.add_argument(
        "--seed",
        type=_common.seed,
        default=DIAGNOSE_DEFAULTS["seed"],
        help="seed of subsampling/bootstrap",
    )
    parser.add_argument("--out", default=None, help="also save the report as text")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=_common.guard("diagnose", run_diagnose))
    return subparsers


def run_compare(args):
    """Reprint a study folder's metrics table, or recompute it with new options
    (--ks, --reference, --num-bootstrap, --seed, --raw-calibration)."""
    study = Study.load(args.study)
    options = bridge.compare_options(args)
    if "ks" in options:
        num_candidates = next(iter(study.scores_by_method.values())).shape[1]
        _common.check_ks(options["ks"], num_candidates)
    result = study.result
    if options or result is None:
        saved = dict(study.metadata.get("compare_options", {}))
        result = study.compare(**{**saved, **options})
    if args.out is not None:
        result.save(args.out, overwrite=args.force)
    print(result.to_string())
    return 0


def rebuild(folder, metadata):
    """The bridge, queries and candidates a study was computed from, read from its files."""
    files = metadata.get("files") or {}
    if not all(files.get(k) for k in ("queries", "bank", "candidates")) or not metadata.get(
        "similarity"
    ):
        raise UsageError(
            f"{folder} records no embedding files (it was not written by 'pyro-contrast "
            "bridge' or 'demo'): nothing to diagnose"
        )
    paths = {k: _inputs.resolve(v, folder) for k, v in files.items() if v}
    inputs = _inputs.read_inputs(
        paths["queries"], paths["bank"], paths["candidates"], paths.get("c_bank")
    )
    _inputs.resolve_temperatures(inputs, metadata["temperature_ab"], metadata["temperature_bc"])
    bridge_ = _inputs.build_bridge(
        inputs,
        metadata["similarity"],
        direct_temperature=metadata.get("direct_temperature"),
        marginal=metadata.get("marginal"),
    )
    return bridge_, inputs


def diagnose_study(bridge_, inputs, group_size, *, alpha, num_bootstrap, seed):
    """:func:`pyro_contrast.diagnose` on a study's inputs. A grouped study (each query scored
    against its own group of candidates) is diagnosed on every query against the first group,
    so the rankings compared have the study's number of candidates."""
    if not inputs.shared_space:
        raise UsageError(
            f"queries ({inputs.queries.shape[1]}-d) and candidates "
            f"({inputs.candidates.shape[1]}-d) live in different spaces: there is no direct "
            "shortcut to diagnose"
        )
    candidates = inputs.candidates if group_size is None else inputs.candidates[:group_size]
    with _inputs.quiet_normalizer():
        return diagnose(
            bridge_,
            inputs.queries,
            candidates,
            alpha=alpha,
            num_bootstrap=num_bootstrap,
            generator=seed,
        )


def run_diagnose(args):
    """Test whether the direct shortcut is justified for a study (pc.diagnose).

    Rebuilds the study's bridge from the embedding files and critic settings recorded in its
    study.json, runs the assumption tests and the direct-vs-exact agreement, and prints the
    report (exit code 0 whatever the verdict).
    """
    if args.out is not None and os.path.exists(args.out) and not args.force:
        raise UsageError(f"{args.out} already exists (pass --force to replace it)")
    study = Study.load(args.study)
    bridge_, inputs = rebuild(args.study, study.metadata)
    message = _inputs.study_normalizer_note(inputs, study.metadata.get("group_size"))
    if message:
        _common.note("diagnose", message)
    report = diagnose_study(
        bridge_,
        inputs,
        study.metadata.get("group_size"),
        alpha=args.alpha,
        num_bootstrap=args.num_bootstrap,
        seed=args.seed,
    )
    text = report.summary()
    if args.out is not None:
        atomic_write(
            args.out, lambda handle: handle.write((text + "\n").encode()), overwrite=args.force
        )
    print(text)
    return 0


def main(argv=None):
    """Run one study subcommand without the package's main dispatcher (for scripts, tests).

    >>> main(["compare", "/nonexistent"])
    2
    """
    parser = _common.one_line_errors(argparse.ArgumentParser(prog="pyro-contrast"))
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return _common.run_command(parser, argv, exit_on_usage=False)
