"""The package's import graph: the layers contract holds and no module imports itself back.

``lint-imports`` (run by CI) checks the layers; this test adds what a layers contract cannot
see: cycles between modules of one layer, function-level imports included.
"""

import grimp
import pytest


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("pyro_contrast", include_external_packages=False)


def test_no_import_cycles(graph):
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == module or imported.startswith(module + "."):
                continue  # a package importing its own submodules (its __init__) is no cycle
            if module.startswith(imported + "."):
                continue  # a module importing its parent package's __init__
            path = graph.find_shortest_chain(importer=imported, imported=module)
            if path:
                cycles.append(" -> ".join((module, *path)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:10])


def test_private_compat_aliases_cover_every_moved_module():
    from pyro_contrast import _compat

    for old, new in _compat.MOVED.items():
        assert new in grimp.build_graph("pyro_contrast").modules, (old, new)
