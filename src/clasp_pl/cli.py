"""The ``clasp`` command: one entry point, one line per subcommand, one way to fail.

``clasp --help`` lists the subcommands (:data:`COMMANDS`); each lives in its own module of
:mod:`clasp_pl.commands`, which parses its arguments and calls the library. A failure the user
can fix (:class:`~clasp_pl.errors.UserError`, which a bad checkpoint, index, query file... raise;
a missing input file; an unknown config key) is printed as one line, ``error: <file>: <reason>;
<fix>``, with exit status 2; ``clasp --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from clasp_pl.errors import UserError

DEBUG_FLAG = "--debug"
USER_ERROR_STATUS = 2


@dataclass(frozen=True)
class Command:
    """A ``clasp`` subcommand.

    Attributes:
        name: the word after ``clasp``.
        module: the module whose ``main(argv) -> int`` runs it (argv without the name).
        summary: its line in ``clasp --help``.
        passes_name: ``main`` also gets the name as ``argv[0]`` (LightningCLI's subcommands).
    """

    name: str
    module: str
    summary: str
    passes_name: bool = False

    def main(self) -> Callable[[list[str]], int | None]:
        return importlib.import_module(self.module).main


COMMANDS: tuple[Command, ...] = (
    *(
        Command(name, "clasp_pl.commands.fit", summary, passes_name=True)
        for name, summary in (
            ("fit", "pretrain CLaSP (LightningCLI: --preset NAME or --config YAML, --help)"),
            ("validate", "validation loss and retrieval of a checkpoint (LightningCLI)"),
            ("test", "test-split loss and retrieval of a checkpoint (LightningCLI)"),
            ("predict", "run the model's predict step (LightningCLI)"),
        )
    ),
    Command("data", "clasp_pl.commands.data", "CIFs, tables or AMCSD -> records; keywords"),
    Command("eval", "clasp_pl.commands.eval", "retrieval and screening report of a checkpoint"),
    Command("cv", "clasp_pl.commands.cv", "k-fold by paper: one model per fold, mean ± std; table"),
    Command("probe", "clasp_pl.commands.probe", "linear probes: pretrained vs random encoder"),
    Command("embed", "clasp_pl.commands.embed", "structures -> a searchable embedding index"),
    Command("search", "clasp_pl.commands.search", "text or CIF queries -> ranked structures"),
    Command("map", "clasp_pl.commands.map", "an interactive embedding map (one HTML file)"),
    Command("serve", "clasp_pl.commands.serve", "a local search page and JSON API over an index"),
    Command(
        "finetune", "clasp_pl.commands.finetune", "property prediction (LightningCLI: fit, test...)"
    ),
    Command(
        "convert-official",
        "clasp_pl.commands.convert_official",
        "a checkpoint of the authors' code -> a clasp_pl one",
    ),
)


def overview() -> str:
    """The text of ``clasp --help``: usage and one line per subcommand."""
    width = max(len(command.name) for command in COMMANDS)
    lines = [
        "usage: clasp [--debug] <command> [options]   (clasp <command> --help: its options)",
        "",
        "commands:",
        *(f"  {command.name:<{width}}  {command.summary}" for command in COMMANDS),
        "",
        f"  {DEBUG_FLAG:<{width}}  show the traceback of a failure instead of one line",
    ]
    return "\n".join(lines)


def show_info_messages() -> None:
    """Show the package's INFO messages (rejects, skipped structures, keyword matches...) on
    stderr, as plain lines. Logging that is configured already (a root handler) is left as it
    is: the messages then go wherever it sends them."""
    package = logging.getLogger("clasp_pl")
    package.setLevel(logging.INFO)
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)


def user_error_line(error: BaseException) -> str | None:
    """The one-line message of a failure the user can fix, or None for any other (a bug)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.filename}: no such file or folder; check the path"
    return None


def run(words: list[str]) -> int:
    """Run the subcommand named by ``words[0]`` on the rest (the overview when none)."""
    by_name = {command.name: command for command in COMMANDS}
    if not words or words[0] in ("-h", "--help"):
        print(overview())
        return 0
    if words[0] not in by_name:
        print(overview(), file=sys.stderr)
        print(f"error: unknown command {words[0]!r}; pick one of the above", file=sys.stderr)
        return USER_ERROR_STATUS
    command = by_name[words[0]]
    return command.main()(words if command.passes_name else words[1:]) or 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clasp`` console script; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    show_info_messages()
    words = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in words
    words = [word for word in words if word != DEBUG_FLAG]
    try:
        return run(words)
    except Exception as error:
        line = user_error_line(error)
        if debug or line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return USER_ERROR_STATUS


if __name__ == "__main__":
    sys.exit(main())
