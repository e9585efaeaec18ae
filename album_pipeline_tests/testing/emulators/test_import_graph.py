"""The emulators import one another in one direction: base -> faults -> loopback server -> each service's
catalogue -> each service's server -> composition -> ``__main__``, with no cycle."""

import ast
from pathlib import Path

import album_pipeline.testing.emulators as emulators

PACKAGE = emulators.__name__

# Lower layers first; a module may import only modules of layers below its own.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"base", "synthetic", "napster_shapes", "musicbrainz_records"}),
    frozenset({"faults"}),
    frozenset({"loopback"}),
    frozenset({"napster_catalog", "musicbrainz_catalog", "omacir_members"}),
    frozenset({"omacir_item"}),
    frozenset({"napster", "musicbrainz", "archive"}),
    frozenset({"composition"}),
    frozenset({"__main__"}),
)
LAYER_OF = {module: depth for depth, modules in enumerate(LAYERS) for module in modules}


def package_modules() -> dict[str, Path]:
    folder = Path(emulators.__file__).parent
    return {path.stem: path for path in sorted(folder.glob("*.py")) if path.stem != "__init__"}


def imported_siblings(path: Path) -> set[str]:
    """The modules of this package that ``path`` imports, anywhere in it (type-checking blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == PACKAGE:  # from album_pipeline.testing.emulators import x
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.removeprefix(PACKAGE + ".").split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix(PACKAGE + ".").split(".")[0]
                for alias in node.names
                if alias.name.startswith(PACKAGE + ".")
            )
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: imported_siblings(path) for name, path in package_modules().items()}


def test_every_module_has_a_layer():
    assert set(package_modules()) == set(LAYER_OF), "place new emulator modules in LAYERS"


def test_the_package_init_imports_no_module_of_the_package():
    # Importing any one module runs __init__ first; it must not pull the rest in.
    assert imported_siblings(Path(emulators.__file__)) == set()


def test_modules_import_only_lower_layers():
    upward = {
        (module, imported)
        for module, imports in import_graph().items()
        for imported in imports
        if LAYER_OF[imported] >= LAYER_OF[module]
    }
    assert upward == set()


def test_the_import_graph_is_acyclic():
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError(f"import cycle: {' -> '.join((*path[path.index(module) :], module))}")
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_layers_are_those_the_modules_use():
    graph = import_graph()
    # The flow the layers promise is the one the code has: each service builds on the loopback server and
    # the composition starts every service.
    assert {"base", "faults", "loopback"} <= graph["napster"] | graph["musicbrainz"] | graph["archive"]
    assert {"napster", "musicbrainz", "archive"} <= graph["composition"]
    assert "composition" in graph["__main__"]
