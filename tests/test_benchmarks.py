"""The benchmark scripts' quick modes run and end with their JSON summary line.

They are not timed here (speed targets are read off the full runs, see benchmarks/README.md);
this keeps the scripts working as the package changes under them.
"""

import json
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args, keys",
    [
        ("bench_bridge.py", ["--quick"], {"speed", "enumeration", "memmap"}),
        ("bench_logmatmul.py", ["--quick"], None),
        ("bench_peers.py", ["--quick"], {"cosine", "wide"}),
        ("bench_vmf.py", ["--num-samples", "2000", "--no-scipy"], None),
    ],
)
def test_quick_mode_runs(script, args, keys):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(summary, dict) and summary
    if keys is not None:
        assert keys <= set(summary)
