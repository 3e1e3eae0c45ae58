"""The result of a comparison: a metrics table with intervals.

:class:`ComparisonResult` is what :func:`pyro_contrast.studies.compare.compare` returns: a tidy
table (method, metric, estimate, lower, upper) that prints as a wide table and saves to JSON
or netCDF.
"""

import io
import json
import math
import os

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


__all__ = ["ComparisonResult"]
