"""The one error type of a failure the user can fix: which file, what is wrong, what to do.

Library code raises :class:`UserError` (or a subclass such as
:class:`~clasp_pl.checkpoints.CheckpointError`) for a bad input it was given; the ``clasp``
command prints it as one line and exits with status 2 (:func:`clasp_pl.cli.main`). A low layer:
standard library only, so that every module may raise it.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A bad input the user can act on.

    Attributes:
        path: the file or folder at fault (or the option, when no file is involved).
        reason: what is wrong with it.
        fix: what the user can do about it.
    """

    kind = ""
    """What ``path`` is (``"checkpoint"``, ``"index"``...), the first word of the message."""

    def __init__(self, path: str | Path, reason: str, fix: str) -> None:
        self.path, self.reason, self.fix = Path(path), reason, fix
        prefix = f"{self.kind} " if self.kind else ""
        super().__init__(f"{prefix}{self.path}: {reason}; {fix}")
