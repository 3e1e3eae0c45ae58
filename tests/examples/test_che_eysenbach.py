"""Smoke tests of the Che & Eysenbach examples: tiny runs, claims.json, and invariants."""

import importlib.util
import json
import os
import types

import numpy as np
import pytest

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "examples")
VERDICTS = ("reproduced", "partly", "not reproduced", "setting differs")
# A few seconds per script: tiny MLPs, a few steps, groups of K = 8.
TINY = [
    "--quick", "--num-seeds", "1", "--num-train", "400", "--num-queries", "64",
    "--num-candidates", "8", "--steps", "10", "--batch-size", "64", "--hidden", "16",
    "--embed-dim", "4", "--target-bank-size", "128",
]  # fmt: skip


def _load(name):
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"che_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, argv, out):
    module = _load(name)
    result = module.main(module.parse_args(["--out", str(out), "--no-plots", *argv]))
    with open(out / "results.json") as stream:
        assert json.load(stream)["settings"]["out"] == str(out)
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")], "temporary file left"
    return module, result, _claims(out)


def _claims(out):
    with open(out / "claims.json") as stream:
        claims = json.load(stream)
    assert isinstance(claims, list) and claims
    for item in claims:
        assert {"id", "claim", "paper", "ours", "verdict"} <= set(item), item
        assert item["verdict"] in VERDICTS
        assert isinstance(item["claim"], str) and item["claim"]
        for key in ("paper", "ours"):
            values = item[key].values() if isinstance(item[key], dict) else [item[key]]
            assert all(isinstance(v, (int, float)) for v in values), (item["id"], key)
    return {item["id"]: item for item in claims}


def _recall(rows, **match):
    picked = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(picked) == 1, (match, picked)
    return picked[0]["recall"]


def test_synthetic_claims_and_references(tmp_path):
    _, result, claims = _run(
        "che_eysenbach_synthetic",
        TINY + ["--similarities", "neg_l2", "dot", "--bank-sizes", "128", "--leak-bank-size", "96"],
        tmp_path,
    )
    assert set(claims) == {
        "che-shared-direct",
        "che-separate-direct-chance",
        "che-dot-direct-fails",
    }
    separate = claims["che-separate-direct-chance"]["ours"]
    assert {"direct", "exact", "lse", "chance"} <= set(separate)
    assert separate["chance"] == pytest.approx(1 / 8)
    rows = result["rows"]
    for r in rows:
        assert 0.0 <= r["recall"] <= 1.0 and r["se"] >= 0.0
    for kind in ("shared", "separate"):
        for method in ("lse", "exact", "lse_leak", "exact_leak", "lse_no_scale"):
            size = 128 if method in ("lse", "exact") else 96
            _recall(rows, similarity="neg_l2", kind=kind, method=method, bank_size=size)
    # A ⊥ C | B holds here, so Lemma 1 with the true conditionals IS the Bayes ranking.
    bayes = _recall(rows, kind="truth", method="bayes")
    assert _recall(rows, kind="truth", method="ci_ceiling") == pytest.approx(bayes)
    # With the true PMIs, the queries' own B in the bank (the authors' protocol) is an oracle
    # path a -> b_own -> c: it cannot lose to an independent bank of the same size by much.
    leak = _recall(rows, kind="truth", method="true_pmi_lse_leak", bank_size=96)
    assert leak >= bayes - 0.1
    # --rescore recomputes claims.json from the saved rows alone: the same claims again.
    (tmp_path / "claims.json").unlink()
    module = _load("che_eysenbach_synthetic")
    rescored = module.main(module.parse_args(["--out", str(tmp_path), "--rescore"]))
    assert rescored["rescored"] and rescored["rows"] == rows
    assert _claims(tmp_path) == claims


def test_bank_size_rows_and_claim(tmp_path):
    _, result, claims = _run("bank_size", TINY + ["--bank-sizes", "16", "64", "128"], tmp_path)
    assert set(claims) == {"che-bank-size"}
    rows = result["rows"]
    for size in (16, 64, 128):
        _recall(rows, kind="truth", method="true_pmi_lse", bank_size=size)
        for kind in ("shared", "separate"):
            for method in ("lse", "exact"):
                row = next(
                    r
                    for r in rows
                    if (r["kind"], r["method"], r["bank_size"]) == (kind, method, size)
                )
                assert row["ms_per_query"] > 0
    # The leak rows need a bank at least as large as the queries (64).
    _recall(rows, kind="separate", method="lse_leak", bank_size=64)
    assert not [r for r in rows if r["method"] == "lse_leak" and r["bank_size"] == 16]


def test_confounder_sweep_reaches_chance_exactly_at_full_bypass(tmp_path):
    _, result, claims = _run(
        "confounder_sweep",
        TINY + ["--rhos", "0", "1", "--corr-noises", "16", "--corr-noise-shapes", "scalar",
                "--bank-size", "64"],
        tmp_path,
    )  # fmt: skip
    assert set(claims) == {"che-ci-violation"}
    rows = result["rows"]

    def get(method, rho):
        return _recall(rows, variant="bypass", value=rho, method=method)

    # At rho = 1 the true B-ratios are identically zero: every score ties, recall is 1/K.
    assert get("ci_ceiling", 1.0) == pytest.approx(1 / 8)
    assert get("true_pmi_lse", 1.0) == pytest.approx(1 / 8)
    assert get("bayes", 1.0) > 0.5  # A and C stay dependent through the bypass
    assert get("ci_ceiling", 0.0) == pytest.approx(get("bayes", 0.0))
    ours = claims["che-ci-violation"]["ours"]
    assert ours["ci_ceiling_rho_1"] == pytest.approx(1 / 8, abs=1e-3)
    _recall(rows, variant="corr_noise", value=16.0, shape="scalar", method="oracle")


def _fake_rows(values):
    rows = []
    for (similarity, kind, method, size), recall in values.items():
        rows.append(dict(similarity=similarity, kind=kind, method=method, bank_size=size,
                         recall=recall, se=0.01))  # fmt: skip
    return rows


@pytest.mark.parametrize("good", [True, False])
def test_synthetic_verdicts_follow_the_numbers(good):
    module = _load("che_eysenbach_synthetic")
    args = types.SimpleNamespace(
        similarities=["cosine", "dot", "neg_l2"], kinds=["shared", "separate", "oracle"],
        bank_sizes=[5000, 100000], leak_bank_size=5000, num_candidates=32,
    )  # fmt: skip
    values = {("-", "truth", "bayes", None): 0.998, ("-", "truth", "true_pmi_lse", 100000): 0.95}
    for s in args.similarities:
        dot = s == "dot"
        values[s, "shared", "direct", None] = (0.39 if dot else 0.99) if good else 0.97
        values[s, "separate", "direct", None] = 0.03 if good else 0.45
        values[s, "oracle", "direct", None] = 0.99
        for kind in ("shared", "separate"):
            for method in ("lse", "exact"):
                values[s, kind, method, 100000] = 0.9 if good else 0.2
                values[s, kind, method, 5000] = 0.8
            values[s, kind, "lse_leak", 5000] = 0.99
    claims = {c["id"]: c for c in module._claims(_fake_rows(values), args)}
    expected = "reproduced" if good else "not reproduced"
    assert claims["che-separate-direct-chance"]["verdict"] == expected
    assert claims["che-dot-direct-fails"]["verdict"] == expected
    assert claims["che-shared-direct"]["verdict"] == "reproduced"  # direct 0.99 / 0.97
    ours = claims["che-separate-direct-chance"]["ours"]
    assert (ours["direct"], ours["lse"], ours["lse_authors_protocol"]) == (
        (0.03, 0.9, 0.99) if good else (0.45, 0.2, 0.99)
    )


def test_refuses_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("user file")
    module = _load("confounder_sweep")
    with pytest.raises(ValueError, match="not empty"):
        module.main(module.parse_args(["--out", str(tmp_path), "--quick"]))
    assert (tmp_path / "keep.txt").read_text() == "user file"


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--num-candidates", "1"], "num-candidates"),
        (["--steps", "0"], "steps"),
        (["--bank-sizes", "0"], "bank-sizes"),
    ],
)
def test_bad_arguments_raise(tmp_path, argv, match):
    module = _load("bank_size")
    with pytest.raises(ValueError, match=match):
        module.main(module.parse_args(["--out", str(tmp_path / "x"), "--quick", *argv]))


def test_grid_world_exact_posterior_covers_consistent_cells(tmp_path):
    module, summary, claims = _run("grid_world", ["--quick"], tmp_path)
    assert claims["che-language-ambiguity"]["verdict"] == "setting differs"
    # Pyro's enumeration of the goal cell and the collapsed bridge compute the same posterior.
    assert summary["pyro_enumeration_max_abs_error"] < 1e-6
    world = module._World(5, 0.9, 0.01)
    # p(y) is uniform, so the exact score's normalizer over all labels is exact (no warning).
    assert np.ptp(world.log_p_y) < 1e-12
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


def test_docs_tables_are_the_committed_full_runs(tmp_path):
    # The page's CSV tables must be what the committed full-run JSON files render to, and the
    # runs must cover every claim id of the contract.
    import shutil

    results = os.path.join(EXAMPLES, os.pardir, "docs", "papers", "results")
    for name in os.listdir(results):
        if name.startswith("che_") and name.endswith(".json"):
            shutil.copy(os.path.join(results, name), tmp_path / name)
    spec = importlib.util.spec_from_file_location(
        "che_render", os.path.join(results, "che_render.py")
    )
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    render.HERE = str(tmp_path)
    render.main()
    for name in os.listdir(tmp_path):
        if name.endswith(".csv"):
            with open(os.path.join(results, name), encoding="utf-8") as stream:
                assert (tmp_path / name).read_text(encoding="utf-8") == stream.read(), name
    ids = set()
    for example in render.EXAMPLES:
        ids |= set(_claims_file(tmp_path / f"che_{example}_claims.json"))
    assert {
        "che-shared-direct",
        "che-separate-direct-chance",
        "che-dot-direct-fails",
        "che-bank-size",
        "che-ci-violation",
    } <= ids


def _claims_file(path):
    os.rename(path, path.parent / "claims.json")
    try:
        return _claims(path.parent)
    finally:
        os.rename(path.parent / "claims.json", path)
