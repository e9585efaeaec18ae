"""album_pipeline: genre-conditioned album cover generation.

The core modules (``sources``, ``data``, ``model``, ``training``, ``metrics``, ``registry``, ``emulators``)
are plain Python and never import Dagster; ``album_pipeline.defs`` wires them into an asset graph and
``album_pipeline.cli`` is a thin command-line shell over the same core.
"""

__version__ = "0.1.0"
