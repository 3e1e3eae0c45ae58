"""Study folders: the inputs of a comparison (scores per method, true candidates, true log
ratios, metadata) written with the comparison table and plots.
"""

import io
import json
import os
import shutil
import tempfile

import numpy as np

from pyro_contrast._files import atomic_write
from pyro_contrast.studies._arrays import check_positives, check_scores
from pyro_contrast.studies.compare import compare
from pyro_contrast.studies.result import ComparisonResult

_STUDY_FORMAT = "pyro_contrast.Study"
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
        """Write the study folder.

        Files are first written to a temporary folder beside ``folder``, then moved into
        place; an existing non-empty ``folder`` is refused unless ``overwrite=True``, in
        which case only this study's own file names are replaced.

        :param str folder: destination folder (created if needed).
        :param ComparisonResult result: also write the table, ``result.json`` and plots.
        :param bool overwrite: allow writing into a non-empty folder.
        :param bool plots: draw the plots (needs ``result`` with a reference).
        :returns: ``folder``.
        """
        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise FileExistsError(f"{folder} exists and is not a folder")
        if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
            raise FileExistsError(f"{folder} is not empty (use overwrite=True / --force)")
        parent = os.path.dirname(folder)
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"cannot create {folder}: {parent} does not exist")
        staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.")
        try:
            self._write(staging, result, plots)
            if not os.path.isdir(folder):
                os.rename(staging, folder)
                return folder
            written = os.listdir(staging)
            for name in written:
                os.replace(os.path.join(staging, name), os.path.join(folder, name))
            for name in set(_STUDY_FILES) - set(written):
                # a stale table or plot from an earlier study would contradict this one
                if os.path.isfile(os.path.join(folder, name)):
                    os.unlink(os.path.join(folder, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
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
        description = {
            "format": _STUDY_FORMAT,
            "version": 1,
            "methods": list(self.scores_by_method),
            "metadata": self.metadata,
        }
        _write_bytes(staging, "study.json", json.dumps(description, indent=2).encode())
        if result is None:
            return
        result.save(os.path.join(staging, "result.json"))
        _write_bytes(staging, "table.csv", result.table.to_csv(index=False).encode())
        _write_bytes(staging, "table.txt", (result.to_string() + "\n").encode())
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

    @classmethod
    def load(cls, folder):
        """Read a study folder written by :meth:`save` (and its ``result.json`` if any)."""
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: no such study folder")
        paths = {name: os.path.join(folder, name) for name in ("study.json", "scores.npz")}
        for name, path in paths.items():
            if not os.path.isfile(path):
                raise ValueError(f"{folder} is not a study folder (no {name})")
        try:
            with open(paths["study.json"]) as handle:
                description = json.load(handle)
            with np.load(paths["scores.npz"], allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            raise ValueError(f"{folder}: cannot read the study ({error})") from None
        if not isinstance(description, dict) or description.get("format") != _STUDY_FORMAT:
            raise ValueError(f"{paths['study.json']} does not describe a pyro-contrast study")
        scores = {}
        for name in description.get("methods", []):
            if _METHOD_PREFIX + name not in arrays:
                raise ValueError(f"{paths['scores.npz']} has no scores for method {name!r}")
            scores[name] = arrays[_METHOD_PREFIX + name]
        study = cls(
            scores,
            positives=arrays.get("positives"),
            truth=arrays.get("truth"),
            metadata=description.get("metadata"),
        )
        if os.path.isfile(os.path.join(folder, "result.json")):
            study.result = ComparisonResult.load(os.path.join(folder, "result.json"))
        return study


def _write_bytes(folder, name, data):
    atomic_write(os.path.join(folder, name), lambda handle: handle.write(data))


__all__ = ["Study"]
