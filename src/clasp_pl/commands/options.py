"""What every command's parser shares: the library's defaults, shown in ``--help``."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any


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
