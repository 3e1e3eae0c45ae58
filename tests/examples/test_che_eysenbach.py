"""Smoke tests of the Che & Eysenbach examples: tiny runs, outputs, and invariants."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "examples")
TINY_TRAINING = [
    "--num-train", "600", "--num-queries", "128", "--num-candidates", "8",
    "--steps", "15", "--batch-size", "64", "--dim", "4",
]


def _load(name):
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"che_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, argv, out):
    module = _load(name)
    summary = module.main(module.parse_args(["--out", str(out), "--no-plots", *argv]))
    assert os.path.exists(out / "table.txt") and os.path.exists(out / "table.csv")
    with open(out / "results.json") as stream:
        assert json.load(stream)["settings"]["out"] == str(out)
    return module, summary


def test_synthetic_ceiling_and_outputs(tmp_path):
    out = tmp_path / "synthetic"
    _, summary = _run("che_eysenbach_synthetic", TINY_TRAINING + [
        "--num-seeds", "2", "--bank-size", "128", "--similarities", "neg_sq_l2"], out)
    rows = summary["rows"]
    methods = {(r["similarity"], r["model"], r["method"]) for r in rows}
    for similarity in ("neg_sq_l2",):
        for method in ("direct", "lse", "exact"):
            assert (similarity, "shared", method) in methods
            assert (similarity, "separate", method) in methods
        assert (similarity, "oracle", "critic") in methods
    for r in rows:
        assert 0.0 <= r["recall_low"] <= r["recall"] <= r["recall_high"] <= 1.0
    # No method beats the Bayes-optimal ranking by more than 3 paired standard errors
    # (probability ~0.1% per comparison for a correct implementation).
    for check in summary["ceiling_check"]:
        assert check["excess"] <= 3 * check["se"] + 1e-12, check


def test_refuses_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("user file")
    module = _load("confounder_sweep")
    with pytest.raises(ValueError, match="not empty"):
        module.main(module.parse_args(["--out", str(tmp_path)]))
    assert (tmp_path / "keep.txt").read_text() == "user file"


def test_confounder_sweep(tmp_path):
    out = tmp_path / "confounder"
    _, summary = _run("confounder_sweep", TINY_TRAINING + [
        "--num-seeds", "1", "--bank-size", "128", "--rhos", "0", "1"], out)
    rows = summary["rows"]
    assert {r["rho"] for r in rows} == {0.0, 1.0}
    assert summary["ceiling_check"].endswith("OK")
    truth = {r["rho"]: r["recall"] for r in rows if r["method"] == "truth"}
    # The confounder adds A–C dependence, so the Bayes ranking improves with rho. 128 queries
    # give SE <= 0.045 each; the simulator's gain (0.40 -> 0.60 at K=32) is far larger.
    assert truth[1.0] > truth[0.0]
    assert all(r["kl"] >= 0 for r in rows)


def test_bank_size(tmp_path):
    out = tmp_path / "bank"
    _, summary = _run("bank_size", TINY_TRAINING + [
        "--bank-sizes", "16", "64", "--target-bank-size", "64"], out)
    rows = summary["rows"]
    for size in (16, 64):
        for method in ("lse", "exact"):
            row = next(r for r in rows if r["method"] == method and r["bank_size"] == size)
            assert row["seconds_per_query"] > 0 and math.isfinite(row["kl"]) and row["kl"] >= 0


def test_grid_world_exact_posterior_covers_consistent_cells(tmp_path):
    out = tmp_path / "grid"
    module, summary = _run("grid_world", ["--size", "5", "--num-checks", "5"], out)
    # Pyro's enumeration of the goal cell and the collapsed bridge compute the same posterior.
    assert summary["pyro_enumeration_max_abs_error"] < 1e-6
    world = module._World(5, 0.9, 0.01)
    posterior = world.bridge.explain(world.states_repeated, world.labels_tiled).reshape(25, 10, 25)
    fits = world.fits.T  # (labels, cells)
    for s in range(25):
        for y in range(10):
            p = posterior[s, y].numpy()
            # Every cell named by the instruction keeps real mass; wrong cells only the
            # annotator-noise share.
            assert p[fits[y]].min() > 1e-3
            assert p[fits[y]].sum() > 0.5
    assert summary["near_peak_cells_per_instruction"]["exact"] > 1
    # On an odd grid the centroid shortcut peaks at the single centre cell of the row/column.
    assert summary["near_peak_cells_per_instruction"]["direct"] == pytest.approx(1.0)
    assert summary["policies"]["exact"]["p_first_move_toward_consistent"] == pytest.approx(1.0)
    assert np.isfinite(summary["policies"]["direct"]["mean_steps"])
