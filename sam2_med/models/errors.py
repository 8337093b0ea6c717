"""Errors raised while finding, verifying and loading model weights."""

from __future__ import annotations

from ..errors import Sam2MedError

__all__ = [
    "CheckpointError",
    "ChecksumError",
    "DeviceUnavailableError",
    "UnknownModelError",
    "WeightsNotFoundError",
]


class UnknownModelError(Sam2MedError, KeyError):
    """A model name that is not in the registry; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class WeightsNotFoundError(Sam2MedError, FileNotFoundError):
    """The weights are neither cached nor downloadable now; the message says how to import them."""


class CheckpointError(Sam2MedError, ValueError):
    """A checkpoint that cannot be loaded as it stands: refused unpickling, or keys or shapes that
    do not match the architecture. The message names the offending keys."""


class ChecksumError(Sam2MedError, ValueError):
    """A weights file whose SHA-256 differs from the published one.

    Attributes
    ----------
    expected, actual
        Hexadecimal SHA-256 digests.
    """

    def __init__(
        self, message: str, path=None, *, expected: str, actual: str, cli: str | None = None
    ) -> None:
        self.expected = expected
        self.actual = actual
        digests = f" (expected sha256 {expected}, got {actual})"
        super().__init__(
            f"{message}{digests}", path, cli=None if cli is None else f"{cli}{digests}"
        )


class DeviceUnavailableError(Sam2MedError, ValueError):
    """A device or dtype that is not valid or not available on this machine."""
