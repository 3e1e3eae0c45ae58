import multiprocessing
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from pyro_contrast._files import (
    FolderExistsError,
    atomic_write,
    folder_entries,
    reading_folder,
    staged_folder,
)

_fork = multiprocessing.get_context("fork")


@pytest.fixture
def fast_path(tmp_path):
    """A folder on tmpfs where available: the kill tests measure the protocol, not fsync."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        import tempfile

        folder = tempfile.mkdtemp(dir="/dev/shm", prefix="pyro-contrast-test-")
        yield Path(folder)
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path


def _write(stage, tag, num_files=3):
    for index in range(num_files):
        (stage / f"file{index}.txt").write_text(f"{tag} {index}")
    (stage / "sub").mkdir()
    (stage / "sub" / "inner.txt").write_text(tag)
    (stage / f"only-{tag}.txt").write_text(tag)


def _content(out):
    """The published content as {relative path: text}, read through folder_entries."""
    content = {}
    for name, path in folder_entries(out).items():
        if os.path.isdir(path):
            for inner in sorted(os.listdir(path)):
                with open(os.path.join(path, inner)) as handle:
                    content[f"{name}/{inner}"] = handle.read()
        else:
            with open(path) as handle:
                content[name] = handle.read()
    return content


def _expected(tag, num_files=3):
    content = {f"file{index}.txt": f"{tag} {index}" for index in range(num_files)}
    content.update({"sub/inner.txt": tag, f"only-{tag}.txt": tag})
    return content


def _physical(out):
    names = sorted(os.listdir(out))
    return names


def test_new_folder_appears_whole(tmp_path):
    out = tmp_path / "study"
    with staged_folder(out) as stage:
        assert stage.is_dir() and not any(stage.iterdir())
        _write(stage, "new")
        assert not out.exists()  # nothing visible before the end
    assert _content(out) == _expected("new")
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no staging left


def test_existing_empty_folder_is_filled(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    with staged_folder(out) as stage:
        _write(stage, "new")
    assert _content(out) == _expected("new")
    assert _physical(out) == sorted(_expected("new").keys() - {"sub/inner.txt"} | {"sub"})


def test_refuses_non_empty_before_any_work(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    ran = []
    with pytest.raises(FolderExistsError, match="not empty") as info:
        with staged_folder(out):
            ran.append(True)
    assert not ran and "\n" not in str(info.value)
    assert isinstance(info.value, FileExistsError)
    assert _physical(out) == ["keep.txt"]


def test_refuses_at_publish_when_out_filled_meanwhile(tmp_path):
    out = tmp_path / "study"
    with pytest.raises(FolderExistsError):
        with staged_folder(out) as stage:
            _write(stage, "late")
            out.mkdir()
            (out / "first.txt").write_text("first")
    assert _physical(out) == ["first.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["study"]


def test_refuses_a_file(tmp_path):
    out = tmp_path / "study"
    out.write_text("not a folder")
    with pytest.raises(FolderExistsError, match="not a folder"):
        with staged_folder(out, force=True):
            pass


def test_force_replaces_as_a_whole(tmp_path):
    out = tmp_path / "study"
    with staged_folder(out) as stage:
        _write(stage, "old", num_files=5)
    with staged_folder(out, force=True) as stage:
        _write(stage, "new")
    assert _content(out) == _expected("new")  # file3, file4 and only-old.txt are gone
    assert not any(name.startswith(".") for name in os.listdir(out))


def test_failed_body_publishes_nothing(tmp_path):
    out = tmp_path / "study"
    with staged_folder(out) as stage:
        _write(stage, "old")
    with pytest.raises(RuntimeError):
        with staged_folder(out, force=True) as stage:
            _write(stage, "new")
            raise RuntimeError("boom")
    assert _content(out) == _expected("old")
    assert not any(name.startswith(".") for name in os.listdir(out))


def test_reserved_names_refused(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    with pytest.raises(ValueError, match="reserved"):
        with staged_folder(out) as stage:
            (stage / ".pyro-contrast-commit").mkdir()
    assert _physical(out) == []


def test_existing_out_is_staged_inside_without_touching_the_parent(tmp_path):
    out = tmp_path / "study"
    with staged_folder(out) as stage:
        _write(stage, "old")
    before = os.stat(tmp_path).st_mtime_ns
    time.sleep(0.01)
    with staged_folder(out, force=True) as stage:
        assert stage.parent == out
        _write(stage, "new")
    # a folder's mtime changes whenever an entry is created, renamed or removed in it
    assert os.stat(tmp_path).st_mtime_ns == before
    assert _content(out) == _expected("new")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_parent_of_writable_out(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    tmp_path.chmod(0o555)
    try:
        with staged_folder(out, force=True) as stage:
            _write(stage, "new")
    finally:
        tmp_path.chmod(0o755)
    assert _content(out) == _expected("new")


@pytest.mark.parametrize(
    "mask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_umask_respected(tmp_path, mask, file_mode, folder_mode):
    previous = os.umask(mask)
    try:
        out = tmp_path / "study"
        with staged_folder(out) as stage:
            atomic_write(stage / "atomic.bin", lambda handle: handle.write(b"x"))
            (stage / "sub").mkdir()
        replaced = tmp_path / "replaced"
        replaced.mkdir(mode=0o777)
        with staged_folder(replaced, force=True) as stage:
            atomic_write(stage / "atomic.bin", lambda handle: handle.write(b"y"))
    finally:
        os.umask(previous)
    for folder in (out, replaced):
        assert os.stat(folder).st_mode & 0o777 == folder_mode
        assert os.stat(folder / "atomic.bin").st_mode & 0o777 == file_mode
    assert os.stat(out / "sub").st_mode & 0o777 == folder_mode


def _leftover(out, tag):
    """A stage left by a killed writer: created in a child that dies holding it."""

    def target():
        with staged_folder(out, force=True) as stage:
            _write(stage, tag)
            os._exit(0)  # dies before publishing, without cleaning up

    process = _fork.Process(target=target)
    process.start()
    process.join()


@pytest.mark.parametrize("exists", [False, True])
def test_leftovers_ignored_and_cleaned(tmp_path, exists):
    out = tmp_path / "study"
    if exists:
        with staged_folder(out) as stage:
            _write(stage, "old")
    _leftover(out, "dead")
    home = out if exists else tmp_path
    assert any(name.startswith(".pyro-contrast-stage") for name in os.listdir(home))
    if exists:
        assert _content(out) == _expected("old")
    else:
        assert not out.exists()
    with staged_folder(out, force=True) as stage:
        _write(stage, "new")
    assert _content(out) == _expected("new")
    assert not any(name.startswith(".") for name in os.listdir(out))
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


def test_live_stage_of_another_writer_is_kept(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    with staged_folder(out, force=True) as stage:
        _write(stage, "slow")
        with staged_folder(out, force=True) as other:  # cleans dead stages only
            _write(other, "fast")
        assert stage.is_dir() and _content(out) == _expected("fast")
    assert _content(out) == _expected("slow")


def _concurrent_writer(out, tag, barrier, force, results):
    try:
        with staged_folder(out, force=force) as stage:
            _write(stage, tag)
            barrier.wait(timeout=30)  # both are inside, staged, before either publishes
        results.put((tag, "won"))
    except FolderExistsError as error:
        results.put((tag, f"lost: {error}"))


@pytest.mark.parametrize("exists", [False, True])
def test_two_concurrent_writers_exactly_one_wins(tmp_path, exists):
    out = tmp_path / "study"
    if exists:
        out.mkdir()
    barrier, results = _fork.Barrier(2), _fork.Queue()
    processes = [
        _fork.Process(target=_concurrent_writer, args=(out, tag, barrier, False, results))
        for tag in ("one", "two")
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    outcomes = dict(results.get(timeout=5) for _ in processes)
    winners = [tag for tag, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    loser = ({"one", "two"} - set(winners)).pop()
    assert "not empty" in outcomes[loser]
    assert _content(out) == _expected(winners[0])
    assert not any(name.startswith(".") for name in os.listdir(out))
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


def _replace(out, num_files, ready):
    with staged_folder(out, force=True) as stage:
        ready.set()
        _write(stage, "new", num_files)
    os._exit(0)


def _check_old_or_new(out, num_files, killed_at):
    content = _content(out)
    assert content in (_expected("old", num_files), _expected("new", num_files)), killed_at
    # the next writer finishes or discards the killed one's work and cleans up
    with staged_folder(out, force=True) as stage:
        _write(stage, "next")
    assert _content(out) == _expected("next")
    assert not any(name.startswith(".") for name in os.listdir(out))
    return content == _expected("new", num_files)


def test_kill_at_every_step_leaves_old_or_new(fast_path):
    """Kill the replacement at each file-system mutation of its publish, in turn."""
    num_files, outcomes, step = 4, [], 0
    while True:
        out = fast_path / f"study{step}"
        with staged_folder(out) as stage:
            _write(stage, "old", num_files)

        def target(step=step, out=out):
            calls = [0]
            for name in ("rename", "replace", "unlink", "rmdir", "mkdir"):
                original = getattr(os, name)

                def wrapped(*args, _original=original, **kwargs):
                    calls[0] += 1
                    if calls[0] > step:
                        os._exit(9)  # killed just before this mutation
                    return _original(*args, **kwargs)

                setattr(os, name, wrapped)
            _replace(out, num_files, _fork.Event())

        process = _fork.Process(target=target)
        process.start()
        process.join()
        finished = process.exitcode == 0
        outcomes.append(_check_old_or_new(out, num_files, step))
        if finished:
            break
        step += 1
    assert outcomes[0] is False and outcomes[-1] is True
    print(f"killed at each of {step} file-system mutations; new from step {outcomes.index(True)}")
    assert step > 5  # the protocol really was interrupted in its publish steps


def test_sigkill_at_random_times_leaves_old_or_new(fast_path):
    rng = random.Random(0)
    num_files, outcomes = 200, []
    # how long do writing and publishing take here?
    out = fast_path / "timing"
    with staged_folder(out) as stage:
        _write(stage, "old", num_files)
    with staged_folder(out, force=True) as stage:
        start = time.perf_counter()
        _write(stage, "new", num_files)
    duration = time.perf_counter() - start
    for trial in range(20):
        out = fast_path / f"study{trial}"
        with staged_folder(out) as stage:
            _write(stage, "old", num_files)
        ready = _fork.Event()
        process = _fork.Process(target=_replace, args=(out, num_files, ready))
        process.start()
        ready.wait(timeout=30)  # writing the stage; then publishing
        time.sleep(rng.uniform(0, duration))
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        new = _check_old_or_new(out, num_files, trial)
        outcomes.append((process.exitcode, new))
    print(
        f"write and publish took {duration * 1e3:.1f} ms; (exit code, new?) per trial: {outcomes}"
    )
    # interrupted runs happened, and each left the old or the new study (checked above)
    assert any(code == -signal.SIGKILL for code, _ in outcomes)


@pytest.mark.parametrize("exists", [False, True])
def test_a_staged_folder_inside_a_stage(tmp_path, exists):
    """A study saved into a larger stage (the demo's results folder) publishes with it."""
    out = tmp_path / "study"
    if exists:
        with staged_folder(out) as stage:
            _write(stage, "old")
    with staged_folder(out, force=True) as stage:
        with staged_folder(stage) as same:  # the (empty) stage itself
            _write(same, "new")
        with staged_folder(stage / "inner") as inner:  # a new folder inside the stage
            _write(inner, "inner")
    assert sorted(folder_entries(out)) == sorted(
        ["file0.txt", "file1.txt", "file2.txt", "inner", "only-new.txt", "sub"]
    )
    assert (out / "inner" / "only-inner.txt").read_text() == "inner"
    assert not any(name.startswith(".") for name in os.listdir(out))


def _replace_when_told(out, go):
    with staged_folder(out, force=True) as stage:
        _write(stage, "new")
        go.wait(timeout=30)
    os._exit(0)


def test_publishers_wait_for_readers(tmp_path):
    out = tmp_path / "study"
    with staged_folder(out) as stage:
        _write(stage, "old")
    go = _fork.Event()
    # started first: a forked child would share (and keep) the reader's lock
    process = _fork.Process(target=_replace_when_told, args=(out, go))
    process.start()
    with reading_folder(out):
        go.set()
        time.sleep(0.3)
        assert _content(out) == _expected("old")  # the publisher is waiting for us
    process.join(timeout=30)
    assert process.exitcode == 0 and _content(out) == _expected("new")
