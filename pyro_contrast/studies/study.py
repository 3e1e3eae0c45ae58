"""Saved comparisons and studies: a metrics table with intervals, and a folder of scores.

:class:`ComparisonResult` is what :func:`pyro_contrast.studies.compare` returns: a tidy table
(method, metric, estimate, lower, upper) that prints as a wide table and saves to JSON or
netCDF. :class:`Study` bundles the inputs of a comparison (scores per method, true candidates,
true log ratios, metadata) and writes them, with the table and plots, to a study folder.
"""

import io
import json
import math
import os
import shutil
import tempfile

import numpy as np
import pandas as pd

from pyro_contrast._files import atomic_write

_COLUMNS = ["method", "metric", "estimate", "lower", "upper"]
_NETCDF_EXTENSIONS = (".nc", ".nc4", ".netcdf", ".cdf")
_FORMAT = "pyro_contrast.ComparisonResult"


class ComparisonResult:
    """Metrics of several methods, each with a bootstrap interval.

    :param pandas.DataFrame table: tidy table with columns ``method, metric, estimate, lower,
        upper``.
    :param dict attrs: how it was computed (reference, number of queries, replicates...).

    >>> result = ComparisonResult.from_rows([("exact", "mrr", 0.5, 0.4, 0.6)])
    >>> print(result.to_string(header=False))
                            mrr
    exact  0.500 [0.400, 0.600]
    """

    def __init__(self, table, *, attrs=None):
        missing = [column for column in _COLUMNS if column not in table.columns]
        if missing:
            raise ValueError(f"table is missing columns {missing}")
        self.table = table[_COLUMNS].reset_index(drop=True)
        self.attrs = dict(attrs or {})

    @classmethod
    def from_rows(cls, rows, *, attrs=None):
        """Build from ``(method, metric, estimate, lower, upper)`` tuples."""
        table = pd.DataFrame([tuple(row) for row in rows], columns=_COLUMNS)
        for column in _COLUMNS[2:]:
            table[column] = table[column].astype(np.float64)
        return cls(table, attrs=attrs)

    @property
    def methods(self):
        """Method names in table order."""
        return list(dict.fromkeys(self.table["method"]))

    @property
    def metrics(self):
        """Metric names in table order."""
        return list(dict.fromkeys(self.table["metric"]))

    @property
    def reference(self):
        """The method the agreement metrics compare against (or ``None``)."""
        return self.attrs.get("reference")

    def estimate(self, method, metric):
        """The point estimate of one metric for one method."""
        row = self.table[(self.table["method"] == method) & (self.table["metric"] == metric)]
        if row.empty:
            raise KeyError(f"no {metric!r} for method {method!r}")
        return float(row["estimate"].iloc[0])

    def wide(self, value="estimate"):
        """A methods × metrics frame of ``estimate``, ``lower`` or ``upper``."""
        if value not in _COLUMNS[2:]:
            raise ValueError(f"value must be one of {_COLUMNS[2:]}, got {value!r}")
        frame = self.table.pivot(index="method", columns="metric", values=value)
        return frame.loc[self.methods, self.metrics].rename_axis(columns=None)

    def to_string(self, *, digits=3, line_width=100, header=True):
        """The table as text: methods as rows, ``estimate [lower, upper]`` cells."""

        def cell(estimate, lower, upper):
            if math.isnan(lower) and math.isnan(upper):
                return f"{estimate:.{digits}f}"
            return f"{estimate:.{digits}f} [{lower:.{digits}f}, {upper:.{digits}f}]"

        estimate, lower, upper = (self.wide(v) for v in ("estimate", "lower", "upper"))
        cells = pd.DataFrame(
            [
                [cell(*values) for values in zip(*rows, strict=True)]
                for rows in zip(estimate.values, lower.values, upper.values, strict=True)
            ],
            index=self.methods,
            columns=self.metrics,
        )
        text = cells.to_string(line_width=line_width)
        if not header:
            return text
        attrs = self.attrs
        lines = [
            f"reference: {attrs.get('reference')}; {attrs.get('num_queries', '?')} queries"
            f" x {attrs.get('num_candidates', '?')} candidates"
        ]
        if attrs.get("num_bootstrap"):
            lines[0] += (
                f"; {100 * attrs.get('confidence', 0.95):g}% percentile bootstrap"
                f" intervals ({attrs['num_bootstrap']} replicates)"
            )
        return "\n".join(lines + [text])

    def __str__(self):
        return self.to_string()

    def __repr__(self):
        return self.to_string()

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims ``method × metric`` and variables
        ``estimate, lower, upper``; ``attrs`` as dataset attributes.

        ``Dataset.sel`` has its own ``method=`` keyword, so select with a dict:
        ``dataset.sel({"method": "exact", "metric": "mrr"})``.
        """
        import xarray as xr

        variables = {
            value: (("method", "metric"), self.wide(value).to_numpy(np.float64))
            for value in _COLUMNS[2:]
        }
        coords = {"method": self.methods, "metric": self.metrics}
        attrs = {
            k: (int(v) if isinstance(v, bool) else v)
            for k, v in self.attrs.items()
            if v is not None
        }
        return xr.Dataset(variables, coords=coords, attrs=attrs)

    @classmethod
    def from_xarray(cls, dataset):
        """Inverse of :meth:`to_xarray`."""
        frame = dataset[_COLUMNS[2:]].to_dataframe().reset_index()
        attrs = {}
        for key, value in dataset.attrs.items():
            attrs[key] = value.tolist() if isinstance(value, np.ndarray) else value
            if isinstance(attrs[key], np.generic):
                attrs[key] = attrs[key].item()
        if "center_calibration" in attrs:
            attrs["center_calibration"] = bool(attrs["center_calibration"])
        if isinstance(attrs.get("ks"), (int, float)):
            attrs["ks"] = [int(attrs["ks"])]
        attrs.setdefault("reference", None)
        return cls(frame.astype({"method": str, "metric": str}), attrs=attrs)

    def save(self, path, *, overwrite=False):
        """Save to ``.json`` or netCDF (``.nc``), atomically.

        :param str path: destination; the extension picks the format.
        :param bool overwrite: replace an existing file.
        :returns: ``path``.
        """
        extension = os.path.splitext(os.fspath(path))[1].lower()
        if extension == ".json":
            payload = {
                "format": _FORMAT,
                "version": 1,
                "attrs": self.attrs,
                "table": {
                    column: [
                        None if isinstance(v, float) and math.isnan(v) else v
                        for v in self.table[column].tolist()
                    ]
                    for column in _COLUMNS
                },
            }
            data = json.dumps(payload, indent=2, allow_nan=False).encode()
        elif extension in _NETCDF_EXTENSIONS:
            # netCDF3 through scipy: readable everywhere, no optional HDF5 library needed
            data = bytes(self.to_xarray().to_netcdf(engine="scipy"))
        else:
            raise ValueError(f"path must end in .json or .nc, got {os.fspath(path)!r}")
        return atomic_write(path, lambda handle: handle.write(data), overwrite=overwrite)

    @classmethod
    def load(cls, path):
        """Load a result saved by :meth:`save`."""
        path = os.fspath(path)
        extension = os.path.splitext(path)[1].lower()
        if extension not in (".json",) + _NETCDF_EXTENSIONS:
            raise ValueError(f"path must end in .json or .nc, got {path!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        if extension == ".json":
            with open(path) as handle:
                try:
                    payload = json.load(handle)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: not valid JSON ({error})") from None
            if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
                raise ValueError(f"{path}: not a saved ComparisonResult")
            table = pd.DataFrame(payload["table"], columns=_COLUMNS)
            for column in _COLUMNS[2:]:
                table[column] = table[column].astype(np.float64)
            return cls(table, attrs=payload.get("attrs"))
        import xarray as xr

        with open(path, "rb") as handle:
            content = handle.read()
        with xr.open_dataset(io.BytesIO(content), engine="scipy") as dataset:
            return cls.from_xarray(dataset.load())


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
        from pyro_contrast.studies.compare import _check_positives, _check_scores

        if not scores_by_method:
            raise ValueError("a study needs at least one method's scores")
        shape = None
        self.scores_by_method = {}
        for name, value in scores_by_method.items():
            value = _check_scores(value, f"scores of method {name!r}", shape)
            self.scores_by_method[name], shape = value, value.shape
        self.truth = None if truth is None else _check_scores(truth, "truth", shape)
        self.positives = None if positives is None else _check_positives(positives, shape)
        self.metadata = dict(metadata or {})
        self.result = None

    def compare(self, **kwargs):
        """:func:`pyro_contrast.studies.compare` on this study's scores (keywords passed on)."""
        from pyro_contrast.studies.compare import compare

        return compare(self.scores_by_method, self.truth, self.positives, **kwargs)

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


__all__ = ["ComparisonResult", "Study"]
