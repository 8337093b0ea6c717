"""Exception hierarchy shared by the whole package.

Every error a user can trigger with bad input derives from :class:`Sam2MedError`, carries the
offending path (when there is one) and says what is wrong in one line, so the command line can
print it without a traceback.
"""

from __future__ import annotations

from os import PathLike


class Sam2MedError(Exception):
    """Base class of every error sam2-med raises on purpose.

    Parameters
    ----------
    message
        One line saying what is wrong and, where possible, what to do.
    path
        The file or folder the problem is about, if any; it is prefixed to the message.
    """

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


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
