"""What every command's parser shares: the library's defaults, shown in ``--help``."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from clasp_pl.api import default_device
from clasp_pl.errors import UserError
from clasp_pl.resources import DEFAULT_CACHE_DIR, DEFAULT_RECORDS
from clasp_pl.viz.records_index import records_index


def default_of(options: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``options``: a command's argparse default
    is read from the library, never repeated."""
    for item in fields(options):
        if item.name == name:
            if item.default is not MISSING:
                return item.default
            if item.default_factory is not MISSING:
                return item.default_factory()
            break
    raise KeyError(f"{options.__name__} has no default for {name!r}")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except an unset one (None, False): its help
    says what happens then."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action) or ""


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser whose ``--help`` shows every option's default."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=DefaultsHelpFormatter
    )


def add_index_source(parser: argparse.ArgumentParser, what: str) -> None:
    """``--index DIR`` or ``--ckpt CKPT`` (with ``--records``, ``--cache-dir``), and ``--device``:
    the index a page is drawn from (``what``: "map", "serve")."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", help="index folder (clasp embed)")
    source.add_argument("--ckpt", help=f"checkpoint: {what} the --records file embedded with it")
    parser.add_argument("--records", default=DEFAULT_RECORDS, help="records file for --ckpt")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="where --ckpt's index goes")
    parser.add_argument("--device", default=default_device(), help="torch device")


def resolve_index(args: argparse.Namespace) -> Path:
    """The index folder that :func:`add_index_source`'s options name: ``--index`` as given, or
    ``--records`` embedded with ``--ckpt`` (built once, cached under ``--cache-dir``).

    Raises:
        UserError: ``--index`` or ``--ckpt`` does not exist.
    """
    for option, path in (("--index", args.index), ("--ckpt", args.ckpt)):
        if path and not Path(path).exists():
            raise UserError(path, "no such file or folder", f"check the path of {option}")
    if args.index:
        return Path(args.index)
    return records_index(args.records, args.ckpt, args.cache_dir, args.device)
