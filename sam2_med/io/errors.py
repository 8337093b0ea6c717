"""Errors raised by :mod:`sam2_med.io`.

All derive from :class:`VolumeReadError` (reading) or :class:`MaskWriteError` (writing), both
subclasses of :class:`sam2_med.errors.Sam2MedError`, so callers catch one class and show
``str(error)``: the path followed by the problem.
"""

from __future__ import annotations

from ..errors import Sam2MedError


class VolumeReadError(Sam2MedError, ValueError):
    """The input cannot be turned into a trustworthy volume."""


class UnsupportedFormatError(VolumeReadError):
    """Not a file type sam2-med reads (or not an image at all)."""


class CorruptFileError(VolumeReadError):
    """A file of a known type that is truncated or damaged."""


class NotAVolumeError(VolumeReadError):
    """Readable images that do not form one 3D grid (single slice, localiser, mixed sizes)."""


class GeometryError(VolumeReadError):
    """The slices do not form a regular grid: gantry tilt, missing slices, uneven spacing,
    inconsistent orientation within a series."""


class MultipleSeriesError(VolumeReadError):
    """A folder holds several image series and none was chosen; the message lists them.

    Attributes
    ----------
    series
        The :class:`sam2_med.io.SeriesInfo` of every candidate series.
    """

    def __init__(self, message: str, path=None, series=(), **wording) -> None:
        super().__init__(message, path, **wording)
        self.series = tuple(series)


class UnsupportedImageError(VolumeReadError):
    """A real image sam2-med deliberately does not handle (4D without an index, RGB, ...)."""


class MissingDependencyError(VolumeReadError, ImportError):
    """An optional backend is not installed; the message names the package to install."""


class MaskWriteError(Sam2MedError, ValueError):
    """A mask cannot be written: wrong shape or dtype, existing output, unwritable folder."""


class OutputExistsError(MaskWriteError, FileExistsError):
    """The output exists and ``overwrite=False``."""
