"""The import graph of a package, read with ``ast``, and the layer rules it must follow.

Every ``import``/``from ... import`` of a module of the package counts, wherever it is: at module
level, inside a function (lazy imports), under ``if TYPE_CHECKING``; relative imports are
resolved. A layer may import its own layer and the layers below it, never one above.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layer:
    """A named layer: the modules and packages (dotted names) that belong to it."""

    name: str
    modules: tuple[str, ...]


# clasp_pl's layers, lowest first. A module belongs to the layer of its longest listed prefix.
CLASP_LAYERS: tuple[Layer, ...] = (
    Layer(
        "foundation",
        (
            "clasp_pl.errors",
            "clasp_pl.resources",
            "clasp_pl.config_utils",
            "clasp_pl.rank_zero",
            "clasp_pl.checkpoints",
        ),
    ),
    Layer("text", ("clasp_pl.text",)),
    Layer("data", ("clasp_pl.data",)),
    Layer("losses", ("clasp_pl.losses",)),
    Layer("models", ("clasp_pl.models",)),
    Layer("training", ("clasp_pl.training",)),
    Layer("api", ("clasp_pl.api",)),
    Layer("search", ("clasp_pl.search",)),
    Layer("viz", ("clasp_pl.viz",)),
    Layer("evaluation", ("clasp_pl.evaluation",)),
    Layer("serve", ("clasp_pl.serve",)),
    Layer(
        "commands",
        (
            "clasp_pl.commands",
            "clasp_pl.cli",
        ),
    ),
)


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``path:line``."""

    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.path.name}:{self.line})"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``package_dir``."""
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool
) -> list[str]:
    """The dotted names an import statement may refer to (a module, or a module's attribute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: strip the importer's own name (unless a package) and level - 1
        package = importer.split(".")
        drop = node.level - 1 + (0 if is_package else 1)
        anchor = ".".join(package[: len(package) - drop])
        base = f"{anchor}.{base}" if base else anchor
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_edges(package_dir: Path) -> list[Edge]:
    """Every import of a module of the package by a module of the package."""
    modules = module_files(package_dir)
    edges = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = _imported_names(node, importer, is_package)
            if isinstance(node, ast.ImportFrom):  # `from a import b`: a.b when it is a module
                submodules = [name for name in names[:-1] if name in modules]
                names = submodules or names[-1:]
            for name in names:
                target = _owning_module(name, modules)
                if target is not None and target != importer:
                    edges.append(Edge(importer, target, path, node.lineno))
    return edges


def _owning_module(name: str, modules: dict[str, Path]) -> str | None:
    """The module of the package that ``name`` is, or is an attribute of; ``None`` if outside."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def layer_of(module: str, layers: Sequence[Layer]) -> int | None:
    """Index (0 = lowest) of the layer whose longest listed name is ``module`` or a package
    holding it; ``None`` when no layer lists it."""
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, layer in enumerate(layers):
        for name in layer.modules:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > best[0]
            ):
                best = (len(name), index)
    return None if best is None else best[1]


def unlayered_modules(package_dir: Path, layers: Sequence[Layer]) -> list[str]:
    """Modules of the package (its root ``__init__`` aside) that no layer lists."""
    root = package_dir.name
    return [
        module
        for module in module_files(package_dir)
        if module != root and layer_of(module, layers) is None
    ]


def upward_imports(package_dir: Path, layers: Sequence[Layer]) -> list[str]:
    """Every import of a higher layer by a lower one, as ``"<lower> imports <higher>: <edge>"``."""
    found = []
    for edge in import_edges(package_dir):
        source, target = layer_of(edge.importer, layers), layer_of(edge.imported, layers)
        if source is not None and target is not None and target > source:
            found.append(f"{layers[source].name} imports {layers[target].name}: {edge}")
    return found
