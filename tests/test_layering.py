"""Dependencies point one way: no module imports a layer above its own (read from the source).

Layers, lowest first: foundation (errors, config_utils, rank_zero, checkpoints), text, data,
losses, models, training, api, search, viz, evaluation, serve, commands (the commands package
and cli) -- see :data:`helpers.layering.CLASP_LAYERS`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers.data import REPO
from helpers.layering import (
    CLASP_LAYERS,
    Layer,
    import_edges,
    layer_of,
    unlayered_modules,
    upward_imports,
)

PACKAGE = REPO / "src" / "clasp_pl"


def test_every_module_belongs_to_a_layer() -> None:
    assert unlayered_modules(PACKAGE, CLASP_LAYERS) == []


@pytest.mark.parametrize("layer", [layer.name for layer in CLASP_LAYERS])
def test_no_layer_imports_a_higher_one(layer: str) -> None:
    assert [line for line in upward_imports(PACKAGE, CLASP_LAYERS) if line.startswith(layer)] == []


def test_the_rules_the_issue_names_are_forbidden_edges() -> None:
    """data never imports models/training/evaluation/search; models never import training,
    evaluation or search; search never imports evaluation; nothing below imports a command."""
    forbidden = {
        "clasp_pl.data.datamodule": ["models", "training", "evaluation", "search"],
        "clasp_pl.models.clasp": ["training", "evaluation", "search"],
        "clasp_pl.search.hybrid": ["evaluation"],
        "clasp_pl.evaluation.evaluate": ["commands"],
    }
    names = [layer.name for layer in CLASP_LAYERS]
    for module, above in forbidden.items():
        for name in above:
            assert layer_of(module, CLASP_LAYERS) < names.index(name), (module, name)


def test_the_graph_sees_lazy_relative_and_from_imports() -> None:
    edges = {(edge.importer, edge.imported) for edge in import_edges(PACKAGE)}
    assert ("clasp_pl.data.datamodule", "clasp_pl.data.keywords") in edges  # inside a method
    assert ("clasp_pl.models.clasp", "clasp_pl.losses") in edges
    assert ("clasp_pl.training.callbacks", "clasp_pl.data.loading") in edges


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "fake"


FAKE_LAYERS = (
    Layer("data", ("fake.data",)),
    Layer("models", ("fake.models",)),
    Layer("commands", ("fake.cli",)),
)


def test_a_forbidden_edge_is_found_and_named(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "fake/__init__.py": "",
            "fake/data/__init__.py": "",
            "fake/data/batches.py": """
                import numpy

                def collate():
                    from fake.models.tower import Tower  # lazy and upward
                    return Tower
            """,
            "fake/data/records.py": "from . import batches\n",
            "fake/models/__init__.py": "",
            "fake/models/tower.py": "from ..data import records\nclass Tower: ...\n",
            "fake/cli.py": "import fake.models.tower\n",
        },
    )
    found = upward_imports(package, FAKE_LAYERS)
    assert found == ["data imports models: fake.data.batches -> fake.models.tower (batches.py:5)"]
    assert unlayered_modules(package, FAKE_LAYERS) == []


def test_an_import_of_a_command_from_below_is_found(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "fake/__init__.py": "",
            "fake/cli.py": "",
            "fake/models/__init__.py": "from fake import cli\n",
            "fake/helpers.py": "",
        },
    )
    assert upward_imports(package, FAKE_LAYERS) == [
        "models imports commands: fake.models -> fake.cli (__init__.py:1)"
    ]
    assert unlayered_modules(package, FAKE_LAYERS) == ["fake.helpers"]
