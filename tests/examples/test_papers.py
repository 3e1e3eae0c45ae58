"""Smoke tests of the Daunhawer, Baptista–Stuart–Tran and Nakada examples: tiny runs, their
outputs and ``claims.json``, and the invariants each paper's claim rests on."""

import importlib.util
import json
import numbers
import os

import numpy as np
import pytest
import torch

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "examples")
VERDICTS = {"reproduced", "partly", "not reproduced", "setting differs"}


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


def _is_numbers(value):
    if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
        return True
    return isinstance(value, dict) and all(_is_numbers(v) for v in value.values())


def _claims(out, ids):
    with open(out / "claims.json") as stream:
        claims = json.load(stream)
    assert [c["id"] for c in claims] == ids
    for item in claims:
        assert set(item) == {"id", "claim", "paper", "ours", "verdict"}
        assert item["verdict"] in VERDICTS and isinstance(item["claim"], str)
        assert _is_numbers(item["paper"]) and _is_numbers(item["ours"])
        assert isinstance(item["ours"], dict) and item["ours"]
    return {c["id"]: c for c in claims}


# --- Daunhawer et al. -----------------------------------------------------------------------


def test_identifiability_content_beats_private_latents(tmp_path):
    table = _run(
        "identifiability",
        [
            "--quick",
            "--settings",
            "independent",
            "--steps",
            "400",
            "--hidden",
            "32",
            "--num-eval",
            "600",
            "--num-test",
            "400",
            "--landmarks",
            "100",
        ],
        tmp_path,
        plots=True,
    )
    assert (tmp_path / "r2_table.csv").exists() and (tmp_path / "daunhawer_r2.png").exists()
    row = table.iloc[0]
    # Even briefly trained, the representation predicts the shared content far better than
    # the modality-specific latents, which no training signal rewards.
    assert row["content kernel R²"] > 0.3
    assert row["content kernel R²"] > max(row["m1 kernel R²"], row["m2 kernel R²"]) + 0.2
    claims = _claims(tmp_path, ["daunhawer-content-r2", "daunhawer-private-r2"])
    assert claims["daunhawer-content-r2"]["ours"]["content_kernel_r2_min"] == pytest.approx(
        row["content kernel R²"]
    )


def test_identifiability_evaluator_on_known_functions():
    module = _load("identifiability")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1500, 3))
    rep = np.c_[np.tanh(z[:, :1]) + z[:, 1:2] ** 3, z[:, 1:2], rng.normal(size=(1500, 1))]
    blocks = {"smooth": np.c_[np.tanh(z[:, 0]) + z[:, 1] ** 3], "absent": z[:, 2:]}
    train = {k: v[:1000] for k, v in blocks.items()}
    test = {k: v[1000:] for k, v in blocks.items()}
    kernel = module.kernel_r2(rep[:1000], train, rep[1000:], test, landmarks=200)
    linear = module.linear_r2(rep[:1000], train, rep[1000:], test)
    # A function of the representation is recovered; an independent latent is not.
    assert kernel["smooth"] > 0.97 and abs(kernel["absent"]) < 0.02
    assert linear["smooth"] > 0.99 and abs(linear["absent"]) < 0.02
    nonlinear = {"square": z[:, :1] ** 2}
    kernel = module.kernel_r2(
        z[:1000],
        {"square": nonlinear["square"][:1000]},
        z[1000:],
        {"square": nonlinear["square"][1000:]},
        landmarks=200,
    )
    linear = module.linear_r2(
        z[:1000],
        {"square": nonlinear["square"][:1000]},
        z[1000:],
        {"square": nonlinear["square"][1000:]},
    )
    assert kernel["square"] > 0.95 and linear["square"] < 0.05


# --- Baptista, Stuart & Tran ----------------------------------------------------------------


def test_gaussian_tilts_closed_forms_and_trained_l2(tmp_path):
    table = _run(
        "gaussian_tilts",
        [
            "--quick",
            "--num-train",
            "3000",
            "--bank-size",
            "3000",
            "--num-test",
            "200",
            "--steps",
            "200",
        ],
        tmp_path,
    )
    assert (tmp_path / "tilt_errors.csv").exists()
    dot = table.xs("closed form (population)", level="method").loc["dot"].iloc[0]
    l2 = table.xs("closed form (population)", level="method").loc["l2"].iloc[0]
    # Population optima in float64: both means exact, the L2 covariance exact, the dot
    # covariance off by ||Σyy - Σy|x|| / ||Σy|x||.
    assert dot.mean_error < 1e-12 and l2.mean_error < 1e-12 and l2.cov_error < 1e-10
    assert dot.cov_error > 0.1
    trained = table.xs("trained: infonce", level="method")
    assert trained.loc["l2"].iloc[0].cov_error < 0.5 * trained.loc["dot"].iloc[0].cov_error
    assert trained.loc["dot"].iloc[0].cov_error == pytest.approx(dot.cov_error, rel=1e-6)
    _claims(tmp_path, ["bst-bilinear-covariance", "bst-l2-tilt-moments"])


def test_data_assimilation_against_kalman_and_ensemble_reference(tmp_path):
    tables = _run(
        "data_assimilation",
        [
            "--quick",
            "--dim",
            "16",
            "--embedding-dims",
            "4",
            "--steps",
            "300",
            "--num-train",
            "3000",
            "--l96-dim",
            "8",
            "--l96-num-train",
            "1500",
            "--l96-steps",
            "150",
            "--ensemble-size",
            "2000",
            "--num-test",
            "20",
            "--l96-hidden",
            "32",
        ],
        tmp_path,
        plots=True,
    )
    assert (tmp_path / "bst_lorenz96.png").exists()
    kalman, lorenz = tables["kalman"], tables["lorenz96"]
    prior = kalman.loc[("none (prior)", 0)]
    l2 = kalman.loc[("L2, trained (InfoNCE)", 4)]
    dot = kalman.loc[("dot, trained (InfoNCE)", 4)]
    assert prior["mean error"] == pytest.approx(1.0)
    # The L2 tilt moves towards the Kalman posterior; the dot tilt keeps the prior covariance.
    assert l2["mean error"] < 0.5 and l2["covariance error"] < 0.5 * prior["covariance error"]
    assert dot["covariance error"] == pytest.approx(prior["covariance error"])
    reference = lorenz.loc["reference (exact likelihood weights)"]
    assert reference.iloc[0] == 0 and reference.iloc[1] == 0
    assert lorenz.loc["prior (ignore y)"].iloc[0] == pytest.approx(1.0)
    assert lorenz.loc["ensemble Kalman (stochastic)"].iloc[0] < 1.0
    _claims(tmp_path, ["bst-data-assimilation"])


def test_digits_retrieval_classification_generation(tmp_path):
    metrics = _run(
        "digits",
        ["--max-images", "600", "--steps", "120", "--num-samples", "3"],
        tmp_path,
        plots=True,
    )
    assert (tmp_path / "bst_digits_samples.png").exists()
    # Chance is 0.1 for every one of these; a briefly trained critic is far above it.
    assert metrics["image→label recall@1"] > 0.6
    assert metrics["label→image precision@10"] > 0.6
    assert metrics["generation: sample has the label"] > 0.6
    assert 1 <= metrics["generation: effective bank size per label"] <= 180


# --- Nakada et al. --------------------------------------------------------------------------


def test_linear_mmcl_all_experiments(tmp_path):
    results = _run(
        "linear_mmcl",
        [
            "--quick",
            "--num-pairs",
            "300",
            "--gd-steps",
            "300",
            "--temperatures",
            "1",
            "100",
            "--mismatch",
            "0.0",
            "0.5",
            "--paired",
            "100",
            "--unpaired",
            "200",
            "--epochs",
            "5",
            "--num-test",
            "1000",
        ],
        tmp_path,
        plots=True,
    )
    assert (tmp_path / "nakada_linear_mmcl.png").exists()
    svd = results["svd"].iloc[0]
    # Full-batch GD on the linear loss converges to the Eckart–Young minimum (MATH §8).
    assert abs(svd["loss gap"]) < 1e-5 * abs(svd["SVD minimum"])
    assert svd["sin θ (x side) to SVD"] < 1e-2
    sines = results["temperature"]["sin θ (x side) to SVD"]
    assert sines.iloc[-1] < 0.01 < sines.iloc[0]
    mismatch = results["mismatch"]
    assert (mismatch.iloc[:, 0] < mismatch.iloc[:, 1]).all()  # MMCL beats PCA of x
    summary, per_seed = results["unpaired"]
    row = summary.iloc[0]
    assert 0 <= row["pseudo-pair precision (last epoch)"] <= 1
    for column in (
        "paired only",
        "with unpaired (pseudo-pairs)",
        "extra-steps control",
        "SVD critic, cosine",
        "SVD critic, dot",
    ):
        assert 0 <= row[column] <= 1
    claims = _claims(
        tmp_path,
        [
            "nakada-svd",
            "nakada-high-temperature-svd",
            "nakada-mismatch-robust",
            "nakada-unpaired-gain",
        ],
    )
    assert set(claims["nakada-unpaired-gain"]["ours"]) == {
        "paired_only",
        "with_unpaired",
        "extra_steps_control",
    }


def test_pseudo_pair_loss_is_clip_when_the_diagonal_dominates():
    module = _load("linear_mmcl")
    scores = torch.randn(6, 6) + 10 * torch.eye(6)
    loss, chosen = module.pseudo_pair_clip(scores)
    assert torch.allclose(loss, module._clip(scores), atol=1e-6)
    assert sorted(chosen.tolist()) == [7 * i for i in range(6)]
    # Off the diagonal the top entries are chosen wherever they are, e.g. a permutation.
    perm = torch.tensor([2, 0, 1, 5, 3, 4])
    shuffled = scores[:, perm]
    loss_shuffled, chosen = module.pseudo_pair_clip(shuffled)
    assert torch.allclose(loss_shuffled, loss, atol=1e-6)
    assert sorted((chosen // 6).tolist()) == list(range(6))


def test_results_folder_is_never_overwritten_unasked(tmp_path):
    common = _load("_common")
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        common.prepare_out(str(tmp_path), force=False)
    assert common.prepare_out(str(tmp_path), force=True) == str(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_script_entry_point_reports_errors_in_one_line_and_keeps_threads():
    common = _load("_common")

    def bad(args):
        raise ValueError("--out is not empty")

    with pytest.raises(SystemExit) as exit_info:
        common.script(bad, lambda: None, "/x/example.py")
    assert exit_info.value.code == "example.py: error: --out is not empty"
    with pytest.raises(SystemExit) as exit_info:
        common.script(lambda args: 3, lambda: None, "example.py")
    assert exit_info.value.code == 3
    common.script(lambda args: {"summary": 1}, lambda: None, "example.py")  # no exit

    seen = []
    before = torch.get_num_threads()

    @common.threaded
    def main(args):
        seen.append(torch.get_num_threads())
        return "done"

    class Args:
        threads = 1

    assert main(Args()) == "done" and seen == [1]
    assert torch.get_num_threads() == before
