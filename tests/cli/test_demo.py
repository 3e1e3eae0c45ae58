import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pyro_contrast.cli import main
from pyro_contrast.studies.study import Study

TINY = [
    "--num-train",
    "400",
    "--num-queries",
    "64",
    "--num-candidates",
    "8",
    "--bank-size",
    "64",
    "--c-bank-size",
    "256",
    "--steps",
    "10",
    "--batch-size",
    "32",
    "--hidden",
    "16",
    "--embedding-dim",
    "4",
    "--num-bootstrap",
    "20",
    "--quiet",
]
SCENES = ("shared", "separate")
METHODS = ("truth", "exact", "lse", "direct")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run with plots, printed at 80 columns."""
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((80, 24)))
        code = main(["demo", "--out", str(out), *TINY])
    return code, stdout.getvalue(), out


def test_demo_prints_two_scenes_with_verdicts_in_80_columns(demo_run):
    code, printed, out = demo_run
    assert code == 0
    for index, scene in enumerate(SCENES):
        assert f"Scene {index + 1}/2: {scene}" in printed
        assert f"Verdict ({scene}):" in printed
    assert printed.count("diagnose: the shortcut is") == 2
    tables = [line for line in printed.splitlines() if line.split()[:4] == list(METHODS)]
    assert len(tables) == 2  # methods as columns, one table per scene
    body = printed.split("Done in")[0]  # the last lines hold paths of any length
    assert max(len(line) for line in body.splitlines()) <= 80


def test_results_json_schema_and_printed_verdict(demo_run):
    _, printed, out = demo_run
    results = json.loads((out / "results.json").read_text())
    assert set(results["scenes"]) == set(SCENES)
    for scene in SCENES:
        estimates = results["scenes"][scene]["estimates"]
        assert set(estimates) == set(METHODS)
        for method in METHODS:
            assert {"recall@1", "kl", "mrr", "spearman"} <= set(estimates[method])
        assert estimates["truth"]["kl"] == pytest.approx(0.0, abs=1e-12)
        verdict = results["scenes"][scene]["verdict"]
        flat = " ".join(printed.split())
        assert all(" ".join(sentence.split()) in flat for sentence in verdict)
        # the verdict's closest method is the one with the smallest KL in the table
        kls = {m: estimates[m]["kl"] for m in METHODS if m != "truth"}
        assert verdict[0].startswith(min(kls, key=kls.get))
    assert results["settings"]["num_candidates"] == 8


def test_scene_folders_work_with_compare_diagnose_and_bridge(demo_run, tmp_path, capsys):
    _, _, out = demo_run
    results = json.loads((out / "results.json").read_text())
    for scene in SCENES:
        folder = out / scene
        study = Study.load(folder)
        assert list(study.scores_by_method) == ["exact", "lse", "direct"]
        assert (folder / "scores_vs_reference.png").stat().st_size > 0
        assert main(["compare", str(folder)]) == 0
        assert capsys.readouterr().out.strip() == study.result.to_string().strip()
        assert main(["diagnose", str(folder)]) == 0
        report = capsys.readouterr().out
        justified = results["scenes"][scene]["diagnosis"]["shortcut_justified"]
        assert report.startswith(
            "Direct shortcut: JUSTIFIED" if justified else "Direct shortcut: NOT justified"
        )
        for name in results["scenes"][scene]["diagnosis"]["failed_assumptions"]:
            assert name in report
        # the scene's embedding files, given to `bridge`, give the demo's scores exactly
        inputs = folder / "inputs"
        argv = ["bridge", "--out", str(tmp_path / scene), "--group-size", "8", "--no-plots"]
        for flag, name in (
            ("--queries", "queries"),
            ("--bank", "bank"),
            ("--candidates", "candidates"),
            ("--c-bank", "c_bank"),
            ("--truth", "truth"),
        ):
            argv += [flag, str(inputs / f"{name}.npz")]
        assert main([*argv, "--num-bootstrap", "20", "--seed", "0"]) == 0
        capsys.readouterr()
        again = Study.load(tmp_path / scene)
        for method, scores in study.scores_by_method.items():
            np.testing.assert_array_equal(again.scores_by_method[method], scores)
        np.testing.assert_array_equal(again.truth, study.truth)


def test_demo_is_seeded_and_reproducible(demo_run, tmp_path):
    _, _, out = demo_run
    first = json.loads((out / "results.json").read_text())
    assert main(["demo", "--out", str(tmp_path / "again"), "--no-plots", *TINY]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    for scene in SCENES:
        assert again["scenes"][scene]["estimates"] == first["scenes"][scene]["estimates"]
        assert again["scenes"][scene]["verdict"] == first["scenes"][scene]["verdict"]
    assert main(["demo", "--out", str(tmp_path / "other"), "--seed", "1", "--no-plots", *TINY]) == 0
    other = json.loads((tmp_path / "other" / "results.json").read_text())
    assert other["scenes"]["shared"]["estimates"] != first["scenes"]["shared"]["estimates"]


def test_demo_refuses_a_non_empty_out_and_force_replaces_it_whole(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["demo", "--out", str(out), "--no-plots", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert main(["demo", "--out", str(out), "--force", "--no-plots", *TINY]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "separate", "shared"]


@pytest.mark.slow
def test_default_demo_tells_the_story_the_readme_shows(tmp_path, monkeypatch, capsys):
    """`pyro-contrast demo` as the README runs it (about 25 s of CPU): exact is near the truth
    in both scenes; the shortcut loses calibration with a shared encoder and is at chance
    between two models; the README shows this very output."""
    from tests.test_readme import assert_matches_readme

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((80, 24))
    )
    assert main(["demo", "--quiet", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    (out,) = tmp_path.iterdir()
    assert out.name.startswith("pyro-contrast-demo-")
    results = json.loads((out / "results.json").read_text())
    for scene in SCENES:
        estimates = results["scenes"][scene]["estimates"]
        truth = estimates["truth"]["recall@1"]
        assert estimates["exact"]["recall@1"] > truth - 0.05
        assert estimates["exact"]["kl"] < 0.15
        assert estimates["direct"]["kl"] > 3 * estimates["exact"]["kl"]
        assert not results["scenes"][scene]["diagnosis"]["shortcut_justified"]
    separate = results["scenes"]["separate"]
    assert separate["estimates"]["direct"]["recall@1"] < 2 / 32
    assert "chance level" in " ".join(separate["verdict"])
    assert_matches_readme(printed)


def test_small_c_bank_is_flagged_once(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "out"), "--no-plots", *TINY, "--c-bank-size", "50"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("C bank has only 50 items (--c-bank-size)") == 1
    assert "warning" not in err  # the library's own warning is not repeated


def test_console_script_help():
    exe = shutil.which("pyro-contrast")
    command = [exe] if exe else [sys.executable, "-m", "pyro_contrast"]
    run = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0
    for name in ("demo", "bridge", "compare", "diagnose"):
        assert name in run.stdout
    assert main([]) == 2
