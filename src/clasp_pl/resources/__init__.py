"""Files shipped inside the package, and where runs and caches go.

- ``data/``: the embedded default records (``amcsd_default.jsonl.gz`` and its keywords,
  rejects and checksum; see the repository's ``data/README.md``);
- ``conf/``: the YAML configs (``clasp fit --preset NAME`` composes them; see
  ``conf/README.md``), and ``conf/eval/amcsd_keywords.yaml`` for keyword screening.

Paths resolve through :mod:`importlib.resources`, so the defaults work from any folder after
``pip install``. Caches go to ``data/cache`` under the working directory unless the environment
variable ``CLASP_CACHE_DIR`` names another folder. A low layer: standard library only.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

CACHE_DIR_VARIABLE = "CLASP_CACHE_DIR"


def resource_path(relative: str) -> Path:
    """The installed path of a packaged file, e.g. ``resource_path("conf/model/tiny.yaml")``."""
    return Path(str(files(__name__).joinpath(relative)))


CONF_DIR = resource_path("conf")
"""The packaged YAML configs."""
DEFAULT_RECORDS = str(resource_path("data/amcsd_default.jsonl.gz"))
"""The embedded default records file (AMCSD structures with their papers' titles)."""
DEFAULT_KEYWORDS = resource_path("conf/eval/amcsd_keywords.yaml")
"""The keyword-screening config of ``clasp eval``."""
DEFAULT_CACHE_DIR = os.environ.get(CACHE_DIR_VARIABLE) or "data/cache"
"""Where featurized caches go: ``$CLASP_CACHE_DIR``, else ``data/cache`` of the working folder."""
