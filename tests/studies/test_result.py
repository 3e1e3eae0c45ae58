"""ComparisonResult on its own: tidy rows in, wide table out, JSON and netCDF round trips."""

import pytest

from pyro_contrast.studies.result import ComparisonResult

ROWS = [
    (m, k, e, e - 0.01, e + 0.02)
    for m, base in (("truth", 0.43), ("exact", 0.41), ("direct", 0.03))
    for k, e in (("recall@1", base), ("kl", 1 - base))
]


def test_rows_become_a_wide_table_of_methods_by_metrics():
    result = ComparisonResult.from_rows(ROWS)
    assert result.methods == ["truth", "exact", "direct"]
    assert result.estimate("exact", "recall@1") == pytest.approx(0.41)
    text = result.to_string(width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "<table" in result._repr_html_()


@pytest.mark.parametrize("name", ["result.json", "result.nc"])
def test_save_and_load_round_trip(tmp_path, name):
    result = ComparisonResult.from_rows(ROWS, attrs={"num_queries": 7})
    path = tmp_path / name
    result.save(path)
    loaded = ComparisonResult.load(path)
    assert loaded.table.equals(result.table)
    with pytest.raises(FileExistsError):
        result.save(path)
