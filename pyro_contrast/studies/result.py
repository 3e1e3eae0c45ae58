"""The result of a comparison: a metrics table with intervals.

:class:`ComparisonResult` is what :func:`pyro_contrast.studies.compare.compare` returns: a tidy
table (method, metric, estimate, lower, upper) that prints with one column per method (fitted
to the terminal), renders as HTML in notebooks and saves to JSON or netCDF.
"""

import html
import io
import json
import math
import os
import shutil
import textwrap

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

    >>> result = ComparisonResult.from_rows(
    ...     [("exact", "mrr", 0.5, 0.4, 0.6), ("direct", "mrr", 0.25, 0.2, 0.3)])
    >>> print(result.to_string(header=False))
                   exact        direct
    mrr     0.500 ±0.100  0.250 ±0.050
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

    def to_string(self, *, metrics=None, methods=None, width=None, digits=3, header=True):
        """The table as text: one column per method, one row per metric.

        Each cell is ``estimate ±h`` with ``h`` half the width of the bootstrap interval (the
        interval itself is in :attr:`table`). Methods that do not fit in ``width`` columns go
        to further blocks below, each repeating the metric names.

        :param metrics: rows to show (default: all, in table order).
        :param methods: columns to show (default: all, in table order).
        :param int width: line width (default: the terminal's, at least 80).
        :param int digits: decimals of values below 10 (larger values get fewer).
        :param bool header: start with a line saying what the numbers are.
        :returns: str.
        """
        metrics = self._select(metrics, self.metrics, "metrics")
        methods = self._select(methods, self.methods, "methods")
        if width is None:
            width = max(80, shutil.get_terminal_size((100, 24)).columns)
        estimate, lower, upper = (
            self.wide(v).loc[methods, metrics] for v in ("estimate", "lower", "upper")
        )
        cells = {
            method: [
                _cell(estimate.at[method, m], lower.at[method, m], upper.at[method, m], digits)
                for m in metrics
            ]
            for method in methods
        }
        label_width = max(len("metric"), *(len(m) for m in metrics))
        widths = {m: max(len(m), *(len(c) for c in cells[m])) for m in methods}
        blocks, current, used = [], [], label_width
        for method in methods:
            if current and used + 2 + widths[method] > width:
                blocks.append(current)
                current, used = [], label_width
            current.append(method)
            used += 2 + widths[method]
        blocks.append(current)
        lines = []
        for block in blocks:
            if lines:
                lines.append("")
            lines.append("".ljust(label_width) + "".join(f"  {m:>{widths[m]}}" for m in block))
            for i, metric in enumerate(metrics):
                lines.append(
                    metric.ljust(label_width)
                    + "".join(f"  {cells[m][i]:>{widths[m]}}" for m in block)
                )
        if header:
            lines = textwrap.wrap(self.describe(metrics), width) + lines
        return "\n".join(lines)

    def describe(self, metrics=None):
        """One sentence saying what the table's numbers are (queries, reference, intervals).

        :param metrics: the metrics shown (default: all); calibration is described only
            when shown.
        """
        attrs = self.attrs
        parts = [
            f"{attrs.get('num_queries', '?')} queries x {attrs.get('num_candidates', '?')} "
            f"candidates",
            f"reference: {attrs.get('reference')}",
        ]
        if attrs.get("num_bootstrap"):
            parts.append(
                f"± half-width of the {100 * attrs.get('confidence', 0.95):g}% bootstrap "
                f"interval over queries ({attrs['num_bootstrap']} replicates)"
            )
        if any(m.startswith("calibration") for m in (metrics or self.metrics)):
            centred = attrs.get("center_calibration")
            parts.append("calibration centred per query" if centred else "raw calibration")
        return "; ".join(parts)

    def _select(self, names, available, what):
        if names is None:
            return list(available)
        names = list(names)
        unknown = [n for n in names if n not in available]
        if unknown or not names:
            raise ValueError(f"{what}: unknown {unknown or names}; available: {available}")
        return names

    def __str__(self):
        return self.to_string()

    def __repr__(self):
        return self.to_string()

    def _repr_html_(self):
        """An HTML table for notebooks: methods as columns, metrics as rows, full intervals."""
        estimate, lower, upper = (self.wide(v) for v in ("estimate", "lower", "upper"))
        head = "".join(f"<th>{html.escape(m)}</th>" for m in self.methods)
        rows = []
        for metric in self.metrics:
            cells = []
            for method in self.methods:
                value = _number(estimate.at[method, metric], 3)
                low, high = lower.at[method, metric], upper.at[method, metric]
                if not (math.isnan(low) and math.isnan(high)):
                    value += (
                        f'<br><span style="opacity:0.6;font-size:smaller">'
                        f"[{_number(low, 3)}, {_number(high, 3)}]</span>"
                    )
                cells.append(f'<td style="text-align:right">{value}</td>')
            rows.append(f"<tr><th>{html.escape(metric)}</th>{''.join(cells)}</tr>")
        return (
            f'<table class="pyro-contrast-comparison"><caption>'
            f"{html.escape(self.describe().replace('± half-width of the', 'intervals:'))}"
            f"</caption><thead><tr><th>metric</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )

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


def _decimals(value, digits):
    """``digits`` decimals below 10, fewer above; one more for values below 0.01, so that a
    small divergence keeps two significant digits."""
    if not math.isfinite(value) or value == 0:
        return digits
    magnitude = int(math.floor(math.log10(abs(value))))
    if magnitude < -2:
        return digits + 1
    return max(0, min(digits, digits - magnitude))


def _number(value, digits, decimals=None):
    if math.isnan(value):
        return "nan"
    decimals = _decimals(value, digits) if decimals is None else decimals
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _cell(estimate, lower, upper, digits):
    if math.isnan(lower) and math.isnan(upper):
        return _number(estimate, digits)
    if math.isnan(estimate):
        return "nan"
    decimals = _decimals(estimate, digits)
    half = (upper - lower) / 2
    return f"{_number(estimate, digits, decimals)} ±{_number(half, digits, decimals)}"


__all__ = ["ComparisonResult"]
