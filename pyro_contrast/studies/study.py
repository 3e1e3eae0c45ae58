"""Study folders: the inputs of a comparison (scores per method, true candidates, true log
ratios, metadata) written with the comparison table and plots.
"""

import hashlib
import io
import json
import os
import time
import zipfile

import numpy as np

from pyro_contrast._files import atomic_write, folder_entries, reading_folder, staged_folder
from pyro_contrast.studies._arrays import check_positives, check_scores
from pyro_contrast.studies.compare import compare
from pyro_contrast.studies.io import MAX_INFLATED_BYTES, check_npz
from pyro_contrast.studies.result import ComparisonResult

_STUDY_FORMAT = "pyro_contrast.Study"
_STUDY_VERSION = 2
_LOAD_ATTEMPTS = 5
# Line width of the saved table.txt (a terminal-independent file).
TABLE_WIDTH = 100
_STUDY_FILES = (
    "scores.npz",
    "study.json",
    "result.json",
    "table.csv",
    "table.txt",
    "scores_vs_reference.png",
    "calibration.png",
)
_METHOD_PREFIX = "method/"


class Study:
    """The inputs of a bridging comparison, savable as a study folder.

    A study folder holds ``scores.npz`` (one ``method/<name>`` array per method, plus
    ``positives`` and ``truth`` when known), ``study.json`` (metadata: files, critics,
    temperatures, methods), and, when a result is saved with it, ``result.json``,
    ``table.csv``, ``table.txt`` and the plots ``scores_vs_reference.png`` and
    ``calibration.png``.

    :param dict scores_by_method: method name → ``(N, K)`` log-ratio scores.
    :param positives: optional ``(N,)`` true candidate indices.
    :param truth: optional ``(N, K)`` true log ratios.
    :param dict metadata: JSON-serializable description of how the scores were made.

    >>> study = Study({"exact": np.eye(3), "direct": np.ones((3, 3))}, positives=np.arange(3))
    >>> float(study.compare(num_bootstrap=0).estimate("exact", "recall@1"))
    1.0
    """

    def __init__(self, scores_by_method, *, positives=None, truth=None, metadata=None):

        if not scores_by_method:
            raise ValueError("a study needs at least one method's scores")
        shape = None
        self.scores_by_method = {}
        for name, value in scores_by_method.items():
            value = check_scores(value, f"scores of method {name!r}", shape)
            self.scores_by_method[name], shape = value, value.shape
        self.truth = None if truth is None else check_scores(truth, "truth", shape)
        self.positives = None if positives is None else check_positives(positives, shape)
        self.metadata = dict(metadata or {})
        self.result = None

    def compare(self, **kwargs):
        """:func:`pyro_contrast.studies.compare` on this study's scores (keywords passed on)."""

        return compare(self.scores_by_method, truth=self.truth, positives=self.positives, **kwargs)

    def save(self, folder, *, result=None, overwrite=False, plots=True):
        """Write the study folder, all at once.

        The files are written to a stage folder and published together (see
        :func:`pyro_contrast._files.staged_folder`): two concurrent saves to one folder
        cannot both succeed, and a save killed at any point leaves the old study or the new
        one. ``study.json`` records a SHA-256 digest of every other file, so :meth:`load`
        refuses a folder whose files come from different studies.

        :param str folder: destination folder (created if needed; its parent must exist).
        :param ComparisonResult result: also write the table, ``result.json`` and plots.
        :param bool overwrite: replace a non-empty ``folder`` as a whole (every file in it,
            not only the study's); otherwise :class:`~pyro_contrast._files.FolderExistsError`.
        :param bool plots: draw the plots (needs ``result`` with a reference).
        :returns: ``folder``.
        """
        folder = os.path.abspath(os.fspath(folder))
        with staged_folder(folder, force=overwrite) as stage:
            self._write(os.fspath(stage), result, plots)
        return folder

    def _write(self, staging, result, plots):
        arrays = {_METHOD_PREFIX + k: v for k, v in self.scores_by_method.items()}
        if self.positives is not None:
            arrays["positives"] = self.positives
        if self.truth is not None:
            arrays["truth"] = self.truth
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _write_bytes(staging, "scores.npz", buffer.getvalue())
        if result is not None:
            result.save(os.path.join(staging, "result.json"))
            _write_bytes(staging, "table.csv", result.table.to_csv(index=False).encode())
            # a fixed width: the saved table must not depend on the terminal that ran it
            table = result.to_string(width=TABLE_WIDTH)
            _write_bytes(staging, "table.txt", (table + "\n").encode())
            reference = result.reference
            if plots and reference is not None and len(result.methods) > 1:
                from pyro_contrast.studies import plots as _plots

                scores = dict(self.scores_by_method)
                if self.truth is not None:
                    scores = {"truth": self.truth, **scores}
                for name, plot in (
                    ("scores_vs_reference.png", _plots.plot_scores_vs_reference),
                    ("calibration.png", _plots.plot_calibration),
                ):
                    plot(scores, reference, path=os.path.join(staging, name))
        digests = {}
        for name in sorted(os.listdir(staging)):
            with open(os.path.join(staging, name), "rb") as handle:
                digests[name] = _digest(handle.read())
        description = {
            "format": _STUDY_FORMAT,
            "version": _STUDY_VERSION,
            "methods": list(self.scores_by_method),
            "metadata": self.metadata,
            "files": digests,
        }
        _write_bytes(staging, "study.json", json.dumps(description, indent=2).encode())

    @classmethod
    def load(cls, folder, *, max_bytes=MAX_INFLATED_BYTES):
        """Read a study folder written by :meth:`save` (and its ``result.json`` if any).

        A folder whose files do not match the digests in its ``study.json`` (files from two
        studies, a truncated file, a file missing) is refused; a save that is publishing
        meanwhile is waited for. Folders written by version 1 (no digests) are read unchecked.

        :param str folder: a study folder.
        :param int max_bytes: the most bytes ``scores.npz`` may inflate to when compressed.
        :raises ValueError: not a study folder, or a partial, mixed or corrupt one.
        """
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: no such study folder")
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                with reading_folder(folder):
                    return cls._load_once(folder, max_bytes)
            except _MixedStudyError:
                if attempt == _LOAD_ATTEMPTS - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))  # a writer may be publishing right now

    @classmethod
    def _load_once(cls, folder, max_bytes):
        entries = folder_entries(folder)
        for name in ("study.json", "scores.npz"):
            if name not in entries or not os.path.isfile(entries[name]):
                raise ValueError(f"{folder} is not a study folder (no {name})")
        raw = {}
        for name in _STUDY_FILES:
            if name in entries and os.path.isfile(entries[name]):
                try:
                    with open(entries[name], "rb") as handle:
                        raw[name] = handle.read()
                except FileNotFoundError:
                    raise _MixedStudyError(f"{folder}: {name} vanished while reading") from None
        json_path = os.path.join(folder, "study.json")
        try:
            description = json.loads(raw["study.json"])
        except ValueError as error:
            raise ValueError(f"{json_path}: cannot read the study ({error})") from None
        methods, metadata, digests = _check_description(description, json_path)
        if digests is not None:
            _check_digests(folder, raw, digests)
        arrays = _read_scores(raw["scores.npz"], os.path.join(folder, "scores.npz"), max_bytes)
        scores = {}
        for name in methods:
            if _METHOD_PREFIX + name not in arrays:
                raise ValueError(f"{folder}/scores.npz has no scores for method {name!r}")
            scores[name] = arrays[_METHOD_PREFIX + name]
        study = cls(
            scores, positives=arrays.get("positives"), truth=arrays.get("truth"), metadata=metadata
        )
        if "result.json" in raw:
            path = entries["result.json"]
            try:
                study.result = ComparisonResult.load(path)
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}: cannot read the result ({error})") from None
            with open(path, "rb") as handle:
                if digests is not None and _digest(handle.read()) != digests["result.json"]:
                    raise _MixedStudyError(f"{folder}: result.json changed while reading")
        return study


class _MixedStudyError(ValueError):
    """Files from different studies (or a file missing): maybe a writer is publishing."""


def _digest(data):
    return hashlib.sha256(data).hexdigest()


def _check_description(description, path):
    """Check ``study.json``'s types: returns (methods, metadata, digests or None)."""
    if not isinstance(description, dict) or description.get("format") != _STUDY_FORMAT:
        raise ValueError(f"{path} does not describe a pyro-contrast study")
    version = description.get("version")
    if isinstance(version, bool) or version not in (1, _STUDY_VERSION):
        raise ValueError(f"{path}: unsupported study version {version!r}")
    methods = description.get("methods")
    if (
        not isinstance(methods, list)
        or not methods
        or not all(isinstance(name, str) for name in methods)
        or len(set(methods)) != len(methods)
    ):
        raise ValueError(f"{path}: 'methods' must be a non-empty list of distinct names")
    metadata = description.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: 'metadata' must be an object, got {type(metadata).__name__}")
    if version == 1:
        return methods, metadata, None
    digests = description.get("files")
    if (
        not isinstance(digests, dict)
        or "scores.npz" not in digests
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items())
    ):
        raise ValueError(f"{path}: 'files' must map each file of the study to its digest")
    return methods, metadata, digests


def _check_digests(folder, raw, digests):
    for name in raw:
        if name != "study.json" and name not in digests:
            raise _MixedStudyError(
                f"{folder}: cannot read the study: it mixes two studies "
                f"({name} is not part of the study in study.json)"
            )
    for name, digest in digests.items():
        if name not in raw:
            raise _MixedStudyError(
                f"{folder}: cannot read the study: an incomplete study ({name} is missing)"
            )
        if _digest(raw[name]) != digest:
            raise _MixedStudyError(
                f"{folder}: cannot read the study: {name} does not match study.json "
                "(it mixes two studies, or the file is corrupt)"
            )


def _read_scores(data, path, max_bytes):
    """The arrays of ``scores.npz``, checked from their headers before any is read."""
    buffer = io.BytesIO(data)
    declared = check_npz(buffer, path, max_bytes=max_bytes)
    shapes = {key: shape for key, (shape, _) in declared.items()}
    rows = {shape[0] if shape else None for shape in shapes.values()}
    if len(rows) > 1:
        raise ValueError(f"{path}: arrays with different numbers of queries: {shapes}")
    buffer.seek(0)
    try:
        with np.load(buffer, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: cannot read the scores ({error})") from None


def _write_bytes(folder, name, data):
    atomic_write(os.path.join(folder, name), lambda handle: handle.write(data))


__all__ = ["Study"]
