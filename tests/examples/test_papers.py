"""Smoke tests of the Daunhawer, Baptista–Stuart–Tran and Nakada examples: tiny runs,
outputs, and the invariants each paper's claim rests on."""

import importlib.util
import json
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "examples")


def _load(name):
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"papers_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, argv, out, plots=False):
    module = _load(name)
    extra = [] if plots else ["--no-plots"]
    result = module.main(module.parse_args(["--out", str(out), *extra, *argv]))
    with open(out / "results.json") as stream:
        assert json.load(stream)["args"]["out"] == str(out)
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")], "temporary file left"
    return result


def test_identifiability_content_beats_private_latents(tmp_path):
    long = _run("identifiability", [
        "--change-probs", "1.0", "--dependences", "none", "--num-train", "1500",
        "--num-test", "500", "--steps", "200", "--hidden", "32", "--lr", "0.02",
        "--max-kernel-samples", "300"], tmp_path)
    assert (tmp_path / "r2_table.csv").exists() and (tmp_path / "r2_table.txt").exists()
    r2 = long.set_index("block").kernel_r2
    # Independent latents and style that always changes: only the content is shared, so a
    # representation trained briefly already predicts it far better than the private blocks.
    assert r2["content"] > 0.5
    assert r2["content"] > max(r2["m1"], r2["m2"]) + 0.3
    assert r2["content"] > r2["style"]


def test_gaussian_tilts_closed_forms_and_trained_l2(tmp_path):
    table = _run("gaussian_tilts", [
        "--num-train", "4000", "--num-test", "300", "--steps", "150",
        "--losses", "infonce"], tmp_path)
    assert (tmp_path / "tilt_errors.csv").exists()
    bilinear = table.loc[("bilinear", "closed form (population)")]
    l2 = table.loc[("l2", "closed form (population)")]
    # Population optima are exact in float64: mean (both) and covariance (L2) to rounding.
    assert bilinear.mean_error < 1e-12 and l2.mean_error < 1e-12 and l2.cov_error < 1e-10
    # The bilinear tilt keeps Σyy as covariance: its error is ||Σyy - Σy|x|| / ||Σy|x||.
    assert bilinear.cov_error > 0.1
    trained_l2 = table.loc[("l2", "trained: infonce")]
    trained_bilinear = table.loc[("bilinear", "trained: infonce")]
    assert trained_l2.cov_error < 0.5 * trained_bilinear.cov_error
    assert trained_l2.kl < trained_bilinear.kl


def test_digits_retrieval_classification_generation(tmp_path):
    metrics = _run("digits", ["--max-images", "600", "--steps", "120", "--num-samples", "3"],
                   tmp_path, plots=True)
    assert (tmp_path / "bst_digits_samples.png").exists()
    # Chance is 0.1 for every one of these; a briefly trained critic is far above it.
    assert metrics["image→label recall@1"] > 0.6
    assert metrics["label→image precision@10"] > 0.6
    assert metrics["generation: sample has the label"] > 0.6
    assert 1 <= metrics["generation: effective bank size per label"] <= 180


def test_linear_mmcl_gd_is_svd_and_mismatch_sweep(tmp_path):
    tables = _run("linear_mmcl", [
        "--num-pairs", "300", "--steps", "300", "--mismatch", "0.0", "0.5",
        "--unpaired", "0", "300", "--repeats", "1", "--few-pairs", "100"], tmp_path)
    gd = tables["gd_vs_svd"].loc["linear_contrastive"]
    # Full-batch GD on the linear loss converges to the Eckart–Young minimum (MATH §8).
    assert abs(gd["loss gap"]) < 1e-6 * abs(gd["SVD minimum"])
    assert gd["sin angle (x side) to SVD"] < 1e-3
    mismatch = tables["mismatch"]
    assert (mismatch.iloc[:, 0] < mismatch.iloc[:, 1]).all()  # MMCL beats PCA of x
    assert mismatch.iloc[0, 0] < mismatch.iloc[1, 0]  # mismatched pairs cost accuracy
    for name in ("gd_vs_svd", "mismatch", "unpaired"):
        assert (tmp_path / f"{name}.csv").exists()


def test_results_folder_is_never_overwritten_unasked(tmp_path):
    common = _load("_common")
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        common.prepare_out(str(tmp_path), force=False)
    assert common.prepare_out(str(tmp_path), force=True) == str(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user data"
