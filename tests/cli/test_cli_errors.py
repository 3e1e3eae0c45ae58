"""Bad input is one line on stderr with exit code 2, refused before any work; two writers of
one folder: one wins; a closed stdout ends a command quietly (issue 11, items 3 and 6)."""

import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from pyro_contrast.cli import _inputs, _scenes, main
from pyro_contrast.studies.study import Study
from tests.cli.test_demo import TINY


def _command():
    exe = shutil.which("pyro-contrast")
    return [exe] if exe else [sys.executable, "-m", "pyro_contrast"]


def _env():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {**os.environ, "PYTHONPATH": root, "MPLBACKEND": "Agg"}


def _code(argv):
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's usage errors exit from the entry point
        return stop.code


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as drawing data or scoring."""

    def refuse(*args, **kwargs):
        raise AssertionError("the command started working before checking its input")

    monkeypatch.setattr(_scenes, "draw", refuse)
    monkeypatch.setattr(_inputs, "score", refuse)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--loss", "bogus"], "invalid choice: 'bogus'"),
        (["--lr", "-1"], "--lr: must be a positive finite number, got -1"),
        (["--lr", "nan"], "--lr: must be a positive finite number, got nan"),
        (["--lr", "inf"], "--lr: must be a positive finite number, got inf"),
        (["--seed", "-1"], "--seed: must be an integer in [0, "),
        (["--seed", "1.5"], "--seed: must be an integer"),
        (["--batch-size", "1"], "--batch-size: must be an integer in [2, 65536], got 1"),
        (["--num-train", "2"], "--num-train 2 is too small"),
        (["--num-train", "100000000000"], "--num-train: must be an integer in [2, 10000000]"),
        (["--num-bootstrap", "1e9"], "--num-bootstrap: must be an integer in [0, 100000]"),
        (["--num-bootstrap", "1000000000"], "--num-bootstrap: must be an integer in [0, 100000]"),
        (["--num-candidates", "1"], "--num-candidates: must be an integer in [2, 4096]"),
        (["--steps", "0"], "--steps: must be an integer in [1, "),
        (["--batch-size", "10000"], "exceeds the 360 training pairs"),
        (["--num-queries", "60"], "multiple of --num-candidates"),
        (["--similarity", "euclid"], "invalid choice: 'euclid'"),
        (["--embedding-dim", "0"], "--embedding-dim: must be an integer"),
    ],
)
def test_demo_bad_arguments_are_one_line_before_any_work(flags, message, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    start = time.perf_counter()
    assert _code(["demo", "--out", str(out), *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-contrast demo: error: "), err
    assert message in err, err
    assert not out.exists()
    assert time.perf_counter() - start < 5  # refused, not attempted


def _files(tmp_path, num=24, dim=6, bank=60):
    rng = np.random.default_rng(0)
    b = rng.normal(size=(bank, dim)).astype(np.float32)
    a = b[:num] + 0.3 * rng.normal(size=(num, dim)).astype(np.float32)
    c = b[:num] + 0.3 * rng.normal(size=(num, dim)).astype(np.float32)
    names = ("queries", "bank", "candidates", "c_bank")
    paths = {name: str(tmp_path / f"{name}.npz") for name in names}
    np.savez(paths["queries"], embeddings=a, temperature=0.2)
    np.savez(paths["bank"], ab=b, bc=b, temperature_bc=0.2)
    np.savez(paths["candidates"], embeddings=c)
    np.savez(paths["c_bank"], embeddings=rng.normal(size=(400, dim)).astype(np.float32))
    return paths


def _bridge(paths, out, *extra):
    return [
        "bridge",
        "--queries",
        paths["queries"],
        "--bank",
        paths["bank"],
        "--candidates",
        paths["candidates"],
        "--c-bank",
        paths["c_bank"],
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ks", "1e20"], "--ks: must be comma-separated positive integers, got '1e20'"),
        (["--ks", "1,100000000000000000000"], "exceeds the 24 candidates"),
        (["--num-bootstrap", "1e9"], "--num-bootstrap: must be an integer in [0, 100000]"),
        (["--num-bootstrap", "1000000000"], "--num-bootstrap: must be an integer in [0, 100000]"),
        (["--seed", "-1"], "--seed: must be an integer in [0, "),
        (["--temperature-ab", "inf"], "--temperature-ab: must be a positive finite number"),
        (["--group-size", "1"], "--group-size: must be an integer >= 2"),
    ],
)
def test_study_commands_refuse_absurd_numbers_before_any_work(
    flags, message, tmp_path, capsys, no_work
):
    paths = _files(tmp_path)
    assert _code(_bridge(paths, tmp_path / "out", *flags)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_compare_refuses_absurd_numbers(tmp_path, capsys):
    paths = _files(tmp_path)
    assert main(_bridge(paths, tmp_path / "s", "--num-bootstrap", "0", "--no-plots")) == 0
    capsys.readouterr()
    for flags, message in [
        (["--ks", "1e20"], "comma-separated positive integers"),
        (["--ks", "100000000000000000000"], "exceeds the 24 candidates"),
        (["--num-bootstrap", "1e9"], "must be an integer in [0, 100000]"),
    ]:
        assert _code(["compare", str(tmp_path / "s"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# -- two writers of one folder (issue 11 item 3) -------------------------------------------


def test_bridge_loses_to_a_writer_that_published_meanwhile(tmp_path, capsys, monkeypatch):
    paths = _files(tmp_path)
    out = tmp_path / "out"
    other = Study({"exact": np.eye(3)}, metadata={"which": "the winner"})
    score = _inputs.score

    def race(*args, **kwargs):  # another run publishes while this one computes
        other.save(out)
        return score(*args, **kwargs)

    monkeypatch.setattr(_inputs, "score", race)
    assert main(_bridge(paths, out, "--num-bootstrap", "0", "--no-plots")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-contrast bridge: error: "), err
    assert "not empty" in err and "--force" in err and "force=True" not in err
    assert Study.load(out).metadata == {"which": "the winner"}  # the winner is intact


def test_demo_loses_to_a_writer_that_published_meanwhile(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    train = _scenes.train

    def race(*args, **kwargs):
        if not out.exists():
            out.mkdir()
            (out / "results.json").write_text('{"winner": true}')
        return train(*args, **kwargs)

    monkeypatch.setattr(_scenes, "train", race)
    assert main(["demo", "--out", str(out), "--no-plots", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-contrast demo: error: ")
    assert "not empty" in err
    assert json.loads((out / "results.json").read_text()) == {"winner": True}
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no stage left


def _race(argvs, timeout=600):
    processes = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )
        for argv in argvs
    ]
    return [(p.wait(timeout), *p.communicate()) for p in processes]


def test_two_concurrent_bridge_runs_one_wins(tmp_path):
    paths = _files(tmp_path)
    out = tmp_path / "out"
    argv = _command() + _bridge(paths, out, "--num-bootstrap", "0", "--no-plots")[0:]
    runs = _race([argv + ["--method", "exact"], argv + ["--method", "lse"]])
    codes = sorted(code for code, _, _ in runs)
    assert codes == [0, 2], runs
    loser = next(err for code, _, err in runs if code == 2)
    assert len(loser.strip().splitlines()) == 1 and "error" in loser and "not empty" in loser
    winner = next(out_ for code, out_, _ in runs if code == 0)
    methods = list(Study.load(out).scores_by_method)
    assert methods in (["exact"], ["lse"])
    assert methods[0] in winner.split()  # the folder holds the winner's study, whole


@pytest.mark.slow
def test_two_concurrent_demo_runs_one_wins(tmp_path):
    out = tmp_path / "out"
    argv = _command() + ["demo", "--out", str(out), "--no-plots", *TINY]
    runs = _race([argv + ["--seed", "1"], argv + ["--seed", "2"]])
    assert sorted(code for code, _, _ in runs) == [0, 2], runs
    loser = next(err for code, _, err in runs if code == 2)
    assert len(loser.strip().splitlines()) == 1 and "not empty" in loser
    seed = json.loads((out / "results.json").read_text())["settings"]["seed"]
    assert seed in (1, 2)
    assert Study.load(out / "shared").metadata["compare_options"]["seed"] == seed


# -- a closed stdout (| head) ends the command quietly ---------------------------------------


class _ClosedPipe(io.TextIOBase):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise io.UnsupportedOperation("no descriptor")


def test_broken_pipe_in_process_exits_quietly(tmp_path, capsys, monkeypatch):
    paths = _files(tmp_path)
    assert main(_bridge(paths, tmp_path / "s", "--num-bootstrap", "0", "--no-plots")) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["compare", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("what", ["compare", "help"])
def test_reader_gone_before_the_output(tmp_path, what):
    """The read end is closed before the command writes (as when `head` has exited)."""
    paths = _files(tmp_path)
    argv = _command()
    if what == "compare":
        assert main(_bridge(paths, tmp_path / "s", "--num-bootstrap", "0", "--no-plots")) == 0
        argv = argv + ["compare", str(tmp_path / "s")]
    else:
        argv = argv + ["--help"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    process.stdout.close()
    with process.stderr:
        err = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, err
    assert err == ""


def test_piped_into_head(tmp_path):
    paths = _files(tmp_path)
    assert main(_bridge(paths, tmp_path / "s", "--num-bootstrap", "0", "--no-plots")) == 0
    command = " ".join(_command() + ["compare", str(tmp_path / "s")])
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{command} | head -1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith("24 queries x 24 candidates") and run.stdout.count("\n") == 1


def test_unusable_out_is_refused_before_any_work(tmp_path, capsys, no_work):
    (tmp_path / "file").write_text("x")
    paths = _files(tmp_path)
    for argv, message in [
        (["demo", "--out", str(tmp_path / "file"), *TINY], "exists and is not a folder"),
        (["demo", "--out", str(tmp_path / "no" / "out"), *TINY], "parent folder"),
        (_bridge(paths, tmp_path / "file"), "exists and is not a folder"),
        (_bridge(paths, tmp_path / "no" / "out"), "parent folder"),
    ]:
        assert _code(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
