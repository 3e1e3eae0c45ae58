"""Render the Che & Eysenbach page's tables from the full runs' JSON files (kept next to it).

The docs build stays offline and never runs experiments: the full runs' ``claims.json`` and
``results.json`` are copied here as ``che_<example>_claims.json`` / ``che_<example>_results.json``
and this script turns them into the CSV files that ``docs/papers/che_eysenbach.rst`` includes
with ``.. csv-table::``. Run it after copying new results:
``python docs/papers/results/che_render.py``.
"""

import csv
import io
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = ("synthetic", "bank_size", "confounder", "grid")
SCRIPTS = {
    "synthetic": "che_eysenbach_synthetic.py",
    "bank_size": "bank_size.py",
    "confounder": "confounder_sweep.py",
    "grid": "grid_world.py",
}


def _load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as stream:
        return json.load(stream)


def _write(name, header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = os.path.join(HERE, name)
    with open(path + ".tmp", "w", encoding="utf-8") as stream:
        stream.write(buffer.getvalue())
    os.replace(path + ".tmp", path)


def _numbers(mapping):
    if not isinstance(mapping, dict):
        return _fmt(mapping)
    return "; ".join(f"{key} {_fmt(value)}" for key, value in mapping.items())


def _fmt(value):
    if value is None:
        return "–"
    if value == 1.0 and isinstance(value, float):
        return "1.00"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}"


def _cell(row):
    return "–" if row is None else f"{row['recall']:.3f} ± {1.96 * row['se']:.3f}"


def claims_table():
    rows = []
    for example in EXAMPLES:
        for item in _load(f"che_{example}_claims.json"):
            rows.append(
                [
                    f"**{item['id']}**: {item['claim']}",
                    _numbers(item["paper"]),
                    _numbers(item["ours"]),
                    item["verdict"],
                ]
            )
    _write("che_claims.csv", ["claim", "paper", "ours", "verdict"], rows)


def runs_table():
    rows = []
    for example in EXAMPLES:
        result = _load(f"che_{example}_results.json")
        settings = result["settings"]
        seeds = settings.get("num_seeds", 1)
        cpu = result.get("cpu_seconds")
        rows.append(
            [
                f"``python examples/{SCRIPTS[example]} --out DIR``",
                seeds,
                f"{result['seconds'] / 60:.1f} min",
                "–" if cpu is None else f"{cpu / 60:.1f} min",
            ]
        )
    _write("che_runs.csv", ["command", "seeds", "wall time", "CPU time"], rows)


def synthetic_table():
    result = _load("che_synthetic_results.json")
    settings, rows = result["settings"], result["rows"]
    small, big = min(settings["bank_sizes"]), max(settings["bank_sizes"])
    leak = settings["leak_bank_size"]

    def get(similarity, kind, method, size=None):
        return next(
            (
                r
                for r in rows
                if (r["similarity"], r["kind"], r["method"], r["bank_size"])
                == (similarity, kind, method, size)
            ),
            None,
        )

    columns = [
        ("direct", None, "direct"),
        ("lse", small, f"lse M={small:,}"),
        ("exact", small, f"exact M={small:,}"),
        ("lse", big, f"lse M={big:,}"),
        ("exact", big, f"exact M={big:,}"),
        ("lse_leak", leak, f"lse, own B in bank (M={leak:,})"),
        ("lse_no_scale", leak, f"lse without scale (M={leak:,})"),
    ]
    out = []
    truth = {
        "direct": get("-", "truth", "bayes"),
        (small, "lse"): get("-", "truth", "true_pmi_lse", small),
        (big, "lse"): get("-", "truth", "true_pmi_lse", big),
        "leak": get("-", "truth", "true_pmi_lse_leak", leak),
    }
    out.append(
        ["true PMIs", "Bayes / LogSumExp"]
        + [
            _cell(truth["direct"]),
            _cell(truth[small, "lse"]),
            "–",
            _cell(truth[big, "lse"]),
            "–",
            _cell(truth["leak"]),
            "–",
        ]
    )
    for similarity in settings["similarities"]:
        for kind in settings["kinds"]:
            cells = []
            for method, size, _ in columns:
                if kind == "oracle" and method != "direct":
                    cells.append("–")
                else:
                    cells.append(_cell(get(similarity, kind, method, size)))
            out.append([similarity, kind, *cells])
    _write("che_synthetic.csv", ["critic", "model"] + [c[2] for c in columns], out)


def bank_size_table():
    result = _load("che_bank_size_results.json")
    rows = result["rows"]

    def get(kind, method, size):
        return next(
            (r for r in rows if (r["kind"], r["method"], r["bank_size"]) == (kind, method, size)),
            None,
        )

    out = []
    for size in result["settings"]["bank_sizes"]:
        timing = [get(k, m, size) for k, m in (("separate", "lse"), ("separate", "exact"))]
        out.append(
            [
                f"{size:,}",
                _cell(get("truth", "true_pmi_lse", size)),
                _cell(get("shared", "lse", size)),
                _cell(get("shared", "exact", size)),
                _cell(get("separate", "lse", size)),
                _cell(get("separate", "exact", size)),
                _cell(get("separate", "lse_leak", size)),
                " / ".join(f"{t['ms_per_query']:.2f}" for t in timing),
            ]
        )
    header = [
        "B bank M",
        "LogSumExp, true PMIs",
        "shared: lse",
        "shared: exact",
        "separate: lse",
        "separate: exact",
        "separate: lse, own B in bank",
        "ms/query lse / exact",
    ]
    _write("che_bank_size.csv", header, out)


def confounder_table():
    result = _load("che_confounder_results.json")
    rows = result["rows"]
    methods = ("bayes", "oracle", "ci_ceiling", "true_pmi_lse", "direct", "lse", "exact")
    keys = []
    for r in rows:
        key = (r["variant"], r["shape"], r["value"])
        if key not in keys:
            keys.append(key)
    out = []
    for variant, shape, value in keys:
        label = f"ρ = {value:g}" if variant == "bypass" else f"κ = {value:g} ({shape})"
        cells = [
            _cell(
                next(
                    r
                    for r in rows
                    if (r["variant"], r["shape"], r["value"], r["method"])
                    == (variant, shape, value, method)
                )
            )
            for method in methods
        ]
        out.append([label, *cells])
    header = [
        "variant",
        "Bayes",
        "oracle",
        "A ⊥ C | B ceiling",
        "LogSumExp, true PMIs",
        "direct",
        "lse",
        "exact",
    ]
    _write("che_confounder.csv", header, out)


def main():
    claims_table()
    runs_table()
    synthetic_table()
    bank_size_table()
    confounder_table()


if __name__ == "__main__":
    main()
