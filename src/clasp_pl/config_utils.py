"""Config dataclasses arrive as instances (Python, LightningCLI) or plain dicts (saved hparams)."""

from __future__ import annotations

from dataclasses import is_dataclass
from typing import TypeVar

T = TypeVar("T")


def as_config(cls: type[T], value: T | dict) -> T:
    """``value`` as an instance of the dataclass ``cls`` (a dict is expanded into it)."""
    if isinstance(value, dict):
        return cls(**value)
    if not (is_dataclass(value) and isinstance(value, cls)):
        raise TypeError(
            f"expected {cls.__name__} or a dict of its fields, got {type(value).__name__}"
        )
    return value
