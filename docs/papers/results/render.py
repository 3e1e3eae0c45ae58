"""Render the full runs' claims into the tables the paper pages include.

Each ``NAME.json`` listed in ``PAGES`` is a copy of a full run's ``claims.json`` (the
run's command, time and settings are on the page); this writes ``NAME_claims.inc`` next
to it. Run after
updating a JSON file::

    python docs/papers/results/render.py
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[2]), str(HERE.parents[2] / "examples")]

from _common import claims_rst  # noqa: E402

#: The claims files of the Daunhawer, Baptista-Stuart-Tran and Nakada pages (the Che &
#: Eysenbach page renders its own with ``che_render.py``).
PAGES = ("daunhawer", "bst_gaussian", "bst_data_assimilation", "nakada")


def main():
    for name in PAGES:
        path = HERE / f"{name}.json"
        claims = json.loads(path.read_text())
        target = path.with_name(f"{path.stem}_claims.inc")
        target.write_text(claims_rst(claims, title="Claims: paper against ours (full run)"))
        print(f"wrote {target.relative_to(HERE.parents[2])}")


if __name__ == "__main__":
    main()
