"""The core is plain Python: only the Dagster shell (album_pipeline.defs, definitions) imports Dagster."""

import pkgutil
import subprocess
import sys

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
