"""The core is plain Python: only the Dagster shell (album_pipeline.defs, definitions) imports Dagster."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import album_pipeline

SHELL = ("album_pipeline.defs", "album_pipeline.definitions")


def core_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(album_pipeline.__path__, "album_pipeline.")]
    return [name for name in names if not name.startswith(SHELL)]


def test_core_modules_never_import_dagster():
    modules = core_modules()
    assert {"album_pipeline.training.loop", "album_pipeline.sources.napster", "album_pipeline.cli"} <= set(
        modules
    )
    # A fresh interpreter, so that nothing imported by other tests hides an import.
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


# Each module has one job and each function reads on one screen or two (issue 10). A module or function that
# must be longer is listed here with the reason.
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100
LONGER_MODULES: dict[str, str] = {}
LONGER_FUNCTIONS: dict[str, str] = {
    "album_pipeline/training/loop.py:train_gan": "the training loop, read top to bottom in one place "
    "(nanoGPT, stylegan2-ada): about 120 lines with its signature and docstring; its parts live beside it",
}


def _package_files() -> list[Path]:
    return sorted(Path(album_pipeline.__file__).parent.rglob("*.py"))


def test_modules_and_functions_stay_short():
    root = Path(album_pipeline.__file__).parent.parent
    long_modules, long_functions = {}, {}
    for path in _package_files():
        name = path.relative_to(root).as_posix()
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES and name not in LONGER_MODULES:
            long_modules[name] = text.count("\n")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{name}:{node.name}" not in LONGER_FUNCTIONS:
                    long_functions[f"{name}:{node.name}"] = length
    assert long_modules == {}, f"modules over {MAX_MODULE_LINES} lines: split them by job"
    assert long_functions == {}, f"functions over {MAX_FUNCTION_LINES} lines"


def test_only_the_shells_import_the_testing_package():
    """Emulators and synthetic writers serve tests, benchmarks and the demo; the pipeline never needs them."""
    root = Path(album_pipeline.__file__).parent
    offenders = []
    for path in _package_files():
        relative = path.relative_to(root).as_posix()
        if relative.startswith("testing/") or relative == "cli.py":
            continue  # the package itself, and the CLI's `demo` / `emulators` commands
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{relative}: {m}" for m in modules if m.startswith("album_pipeline.testing")]
    assert offenders == []
