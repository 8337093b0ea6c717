"""Exception hierarchy shared by the whole package.

Every error a user can trigger with bad input derives from :class:`Sam2MedError`, carries the
offending path (when there is one) and says what is wrong in one line, so the command line can
print it without a traceback.

Advice for two audiences
------------------------
A message that tells the user what to do has to name what that user types: a Python caller
passes ``overwrite=True``, a command-line user gives ``--overwrite``. Such an error carries both
wordings: ``message`` (Python, what ``str(error)`` shows) and ``cli`` (the same sentence naming
command-line flags), and optionally extra ``details`` lines (``cli_details`` for the command
line). The command line prints :meth:`Sam2MedError.cli_lines`; nothing else translates.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

__all__ = ["ConfigError", "PromptError", "Sam2MedError", "Sam2MedWarning"]


class Sam2MedError(Exception):
    """Base class of every error sam2-med raises on purpose.

    Parameters
    ----------
    message
        One line saying what is wrong and, where possible, what to do (Python wording).
    path
        The file or folder the problem is about, if any; it is prefixed to the message.
    cli
        The same line for a command-line user, naming flags instead of keyword arguments;
        default: ``message`` (for messages that give no Python advice).
    details
        Further short lines (how to fix it), shown after the message.
    cli_details
        Command-line wording of ``details``; default: ``details``.
    """

    def __init__(
        self,
        message: str,
        path: str | PathLike[str] | None = None,
        *,
        cli: str | None = None,
        details: Sequence[str] = (),
        cli_details: Sequence[str] | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.problem = message
        self.cli_problem = message if cli is None else cli
        self.details = tuple(details)
        self.cli_details = self.details if cli_details is None else tuple(cli_details)
        head = f"{self.path}: {message}" if self.path else message
        super().__init__("\n".join([head, *self.details]))

    def cli_lines(self) -> list[str]:
        """The error as the command line prints it: one line (path and problem, whitespace
        collapsed), then the detail lines."""
        head = f"{self.path}: {self.cli_problem}" if self.path else self.cli_problem
        return [" ".join(head.split()), *self.cli_details]

    def cli_one_line(self) -> str:
        """:meth:`cli_lines` joined into one line (for per-job log lines)."""
        return " ".join(self.cli_lines())

    def wording(self) -> dict[str, object]:
        """Keyword arguments that re-create this error's wording on another error class
        (``OtherError(err.problem, path, **err.wording())``)."""
        return {"cli": self.cli_problem, "details": self.details, "cli_details": self.cli_details}


class PromptError(Sam2MedError, ValueError):
    """A prompt (point, box, mask) that does not fit the volume or the session."""


class ConfigError(Sam2MedError, ValueError):
    """A configuration file (a model entry, the intensity presets) that breaks its schema.

    Parameters
    ----------
    message
        What is wrong with the value.
    path
        The YAML file.
    key
        Dotted path of the offending key inside the file (``"weights.sha256"``), or None when
        the problem is the file as a whole; it is named in the message.
    """

    def __init__(
        self, message: str, path: str | PathLike[str] | None = None, key: str | None = None
    ) -> None:
        self.key = key
        super().__init__(f"key {key!r}: {message}" if key else message, path)


class Sam2MedWarning(UserWarning):
    """A warning sam2-med issues on purpose, with a command-line wording.

    Parameters
    ----------
    message
        Python wording (what ``warnings`` shows).
    cli
        The same for a command-line user (flags, not keyword arguments); default ``message``.
    """

    def __init__(self, message: str, *, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = message if cli is None else cli
