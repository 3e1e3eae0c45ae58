import json
import shutil
import subprocess
import sys

import pytest

from pyro_contrast.cli import main

TINY = [
    "--num-train",
    "600",
    "--num-queries",
    "64",
    "--num-candidates",
    "8",
    "--bank-size",
    "128",
    "--steps",
    "15",
    "--batch-size",
    "64",
    "--num-bootstrap",
    "20",
    "--quiet",
]


def test_demo_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    for method in ("truth", "exact", "lse", "direct"):
        assert method in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["estimates"]) == {"truth", "exact", "lse", "direct"}
    assert results["estimates"]["truth"]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert (out / "scores_vs_reference.png").stat().st_size > 0
    # A non-empty folder is refused with one line and exit code 2, untouched.
    before = sorted(p.name for p in out.iterdir())
    assert main(["demo", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not empty" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == before
    assert main(["demo", "--out", str(out), "--force", "--seed", "1", *TINY]) == 0


def test_demo_is_reproducible(tmp_path):
    for name in ("one", "two"):
        assert main(["demo", "--out", str(tmp_path / name), "--no-plots", *TINY]) == 0
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["estimates"] == two["estimates"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-candidates", "1"], "at least 2"),
        (["--steps", "0"], "--steps must be"),
        (["--batch-size", "100000"], "cannot exceed"),
        (["--num-queries", "4"], "at least"),
    ],
)
def test_demo_bad_arguments(flags, message, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x"), *TINY, *flags]) == 2
    assert message in capsys.readouterr().err


def test_console_script_help():
    exe = shutil.which("pyro-contrast")
    command = [exe] if exe else [sys.executable, "-m", "pyro_contrast"]
    run = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    for name in ("demo", "bridge", "compare", "diagnose"):
        assert name in run.stdout
    assert main([]) == 2
