"""Intensity transforms that turn voxel values into model-ready floats in ``[0, 1]``.

Everything here is pure numpy, works in memory, and returns ``float32``. This is the last step
before the model sees a slice: there is no 8-bit or JPEG round trip.

Order of operations (as DICOM prescribes)
-----------------------------------------
1. Modality LUT (Rescale Slope/Intercept) to Hounsfield units. The readers in :mod:`sam2_med.io`
   already do this: ``Volume.array`` of a CT is in HU.
2. A VOI transform: a CT **window** (:func:`apply_window`, presets in :data:`CT_WINDOWS`, read
   from the package's ``configs/intensity.yaml``), or for MR and other modalities a
   **percentile range** fixed once on the whole volume (:func:`normalize_percentile`).

The window function is the DICOM *linear* VOI LUT function of PS3.3 C.11.2.1.2.1, mapped to the
output range ``[0, 1]``; the *linear exact* variant of PS3.3 C.11.2.1.3.2 is available with
``function="linear_exact"``.

:class:`IntensityTransform` freezes the resolved parameters, so applying it slice by slice gives
exactly the values of applying it to the whole volume and slicing afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from .volume import Volume

__all__ = [
    "CT_WINDOWS",
    "DEFAULT_CT_WINDOW",
    "DEFAULT_PERCENTILES",
    "IntensityTransform",
    "WindowPreset",
    "apply_window",
    "normalize_percentile",
    "rescale_minmax",
    "resolve_intensity",
    "volume_percentiles",
]

WindowFunction = Literal["linear", "linear_exact"]


@dataclass(frozen=True)
class WindowPreset:
    """A named CT display window.

    Attributes
    ----------
    center, width : float
        Window center (level) and width in Hounsfield units.
    source : str
        Where the values come from.
    """

    center: float
    width: float
    source: str

    @property
    def limits(self) -> tuple[float, float]:
        """``(center - width / 2, center + width / 2)`` in HU: black below, white above."""
        return self.center - self.width / 2.0, self.center + self.width / 2.0


def _read_presets() -> tuple[Mapping[str, WindowPreset], str, tuple[float, float]]:
    """The presets shipped in ``sam2_med/configs/intensity.yaml``, checked."""
    from .config import Section, package_config_dir, read_yaml

    file = package_config_dir() / "intensity.yaml"
    doc = Section(read_yaml(file), file)
    default = doc.value("default_ct_window", str)
    pct = doc.raw("default_percentiles")
    if not (
        isinstance(pct, list)
        and len(pct) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pct)
        and 0 <= pct[0] < pct[1] <= 100
    ):
        raise doc.error(
            f"must be [lower, upper] with 0 <= lower < upper <= 100, got {pct!r}",
            "default_percentiles",
        )
    table = doc.section("ct_windows")
    assert table is not None
    windows = {}
    for name, value in table.items():
        if not isinstance(value, Mapping):
            raise table.error(
                f"must be a mapping with center, width and source, got {value!r}", name
            )
        entry = Section(value, file, table.key(name))
        center, width = entry.value("center", float), entry.value("width", float)
        if width < 1:
            raise entry.error(f"must be at least 1 HU, got {width:g}", "width")
        windows[name] = WindowPreset(center, width, entry.value("source", str))
        entry.done()
    doc.done()
    if default not in windows:
        raise doc.error(f"must name one of ct_windows, got {default!r}", "default_ct_window")
    return MappingProxyType(windows), default, (float(pct[0]), float(pct[1]))


_PRESETS = _read_presets()

#: Named CT windows in HU, ``name -> WindowPreset(center, width, source)``; read from
#: ``sam2_med/configs/intensity.yaml``.
CT_WINDOWS: Mapping[str, WindowPreset] = _PRESETS[0]

#: The preset ``"auto"`` picks for CT: predictable and independent of what a scanner stored.
DEFAULT_CT_WINDOW: str = _PRESETS[1]

#: Lower and upper percentiles ``"auto"`` uses for non-CT volumes.
DEFAULT_PERCENTILES: tuple[float, float] = _PRESETS[2]

#: Above this many voxels, volume percentiles are computed on an evenly strided subsample.
PERCENTILE_MAX_SAMPLES = 2_000_000


# -- pure functions -----------------------------------------------------------------------------
def _ramp(array: np.ndarray, pivot: float, denom: float, mid: float) -> np.ndarray:
    """``clip((array - pivot) / denom + mid, 0, 1)`` as float32, NaN -> 0.

    Subtract-then-divide keeps the breakpoints exact in float32 (``-200 / 400 + 0.5`` is exactly
    0, where a precomputed slope and offset would leave ``3e-8``). ``denom == 0`` is a step:
    0 at or below ``pivot``, 1 above it.
    """
    x = np.asarray(array)
    if denom == 0.0:
        out = (x > pivot).astype(np.float32)
        return out
    out = x.astype(np.float32, copy=True)
    out -= np.float32(pivot)
    out /= np.float32(denom)
    out += np.float32(mid)
    np.clip(out, 0.0, 1.0, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)
    return out


def _window_ramp(center: float, width: float, function: str) -> tuple[float, float, float]:
    """``(pivot, denom, mid)`` of a DICOM VOI LUT function with output range [0, 1]."""
    center = float(center)
    width = float(width)
    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError(f"window center and width must be finite, got {center}, {width}")
    if function == "linear":
        if width < 1.0:
            raise ValueError(f"the DICOM linear window needs width >= 1, got {width}")
        # with w = 1 the standard's function is a step at c - 0.5 (denom 0)
        return center - 0.5, width - 1.0, 0.5
    if function == "linear_exact":
        if width <= 0.0:
            raise ValueError(f"the DICOM linear exact window needs width > 0, got {width}")
        return center, width, 0.5
    raise ValueError(f"unknown window function {function!r}; use 'linear' or 'linear_exact'")


def apply_window(
    array: np.ndarray,
    center: float,
    width: float,
    *,
    function: WindowFunction = "linear",
) -> np.ndarray:
    """Apply a DICOM VOI window and map the result to ``[0, 1]``.

    With ``function="linear"`` (the default) this is the DICOM *linear* VOI LUT function,
    PS3.3 C.11.2.1.2.1, with output range ``y_min = 0``, ``y_max = 1``::

        if   x <= c - 0.5 - (w - 1) / 2:  y = 0
        elif x >  c - 0.5 + (w - 1) / 2:  y = 1
        else:                             y = ((x - (c - 0.5)) / (w - 1) + 0.5)

    which, the function being continuous, equals ``clip(((x - (c - 0.5)) / (w - 1) + 0.5), 0, 1)``:
    black at ``x <= c - w/2``, white from ``x >= c + w/2 - 1`` (for 40/400 HU: -160 and 239;
    the "-0.5"/"-1" make the ramp span exactly ``w`` integer stored values).
    With ``function="linear_exact"`` it is PS3.3 C.11.2.1.3.2: ``clip((x - c) / w + 0.5, 0, 1)``,
    so ``c - w/2`` maps to exactly 0 and ``c + w/2`` to exactly 1.

    Parameters
    ----------
    array : ndarray, any shape
        Values after the modality LUT (HU for CT). Any real dtype; not modified.
    center, width : float
        Window center and width in the units of ``array`` (DICOM Window Center/Width).
        ``width >= 1`` for ``"linear"``, ``> 0`` for ``"linear_exact"``.
    function : {"linear", "linear_exact"}
        Which DICOM VOI LUT function.

    Returns
    -------
    ndarray of float32, same shape as ``array``
        Values in ``[0, 1]``; NaN inputs become 0, ``-inf`` 0 and ``+inf`` 1.

    Raises
    ------
    ValueError
        For a non-finite center/width, a width too small for the function, an unknown function.

    Examples
    --------
    >>> hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.int16)
    >>> apply_window(hu, 40, 400, function="linear_exact").tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0]
    >>> apply_window(hu, 40, 400).dtype
    dtype('float32')
    """
    return _ramp(array, *_window_ramp(center, width, function))


def _range_ramp(low: float, high: float) -> tuple[float, float, float]:
    """``(pivot, denom, mid)`` mapping ``low..high`` onto [0, 1]; a step when they are equal."""
    low = float(low)
    high = float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"range limits must be finite, got {low}, {high}")
    if high < low:
        raise ValueError(f"range upper limit {high} is below the lower limit {low}")
    return low, high - low, 0.0


def _apply_range(array: np.ndarray, low: float, high: float) -> np.ndarray:
    return _ramp(array, *_range_ramp(low, high))


def _lattice_step(shape: tuple[int, ...], max_samples: int) -> int:
    """Smallest step ``n`` with ``prod(ceil(s / n)) <= max_samples``."""
    step = max(1, int((float(np.prod(shape)) / max_samples) ** (1.0 / len(shape))))
    while np.prod([-(-n // step) for n in shape]) > max_samples:
        step += 1
    return step


def volume_percentiles(
    array: np.ndarray,
    lower: float = DEFAULT_PERCENTILES[0],
    upper: float = DEFAULT_PERCENTILES[1],
    *,
    mask: np.ndarray | None = None,
    max_samples: int | None = PERCENTILE_MAX_SAMPLES,
) -> tuple[float, float]:
    """The ``lower`` and ``upper`` percentiles of a whole volume.

    Parameters
    ----------
    array : ndarray, any shape
        Voxel values (e.g. ``Volume.array``, axes ``(i, j, k)``).
    lower, upper : float
        Percentiles in ``[0, 100]``, ``lower <= upper``.
    mask : ndarray of bool, same shape as ``array``, optional
        Only voxels where ``mask`` is true count (pass ``array != 0`` to ignore zero-filled
        background, common in skull-stripped MR). ``None``: every voxel counts.
    max_samples : int or None
        If the array has more voxels than this, use every ``n``-th voxel along *each* axis
        (``n`` the smallest step giving at most ``max_samples`` voxels): a regular 3D lattice,
        deterministic, cheap, free of the aliasing a flat C-order stride has (which can land
        on a few planes), and for robust percentiles such as 0.5/99.5 within noise of the full
        result. ``None``: all voxels.

    Returns
    -------
    (float, float)
        The two percentile values, in the units of ``array``. NaNs are ignored.

    Examples
    --------
    >>> volume_percentiles(np.arange(101.0), 10, 90)
    (10.0, 90.0)
    """
    if not (0.0 <= lower <= upper <= 100.0):
        raise ValueError(
            f"percentiles must satisfy 0 <= lower <= upper <= 100, got {lower}, {upper}"
        )
    values = np.asarray(array)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"mask shape {mask.shape} differs from array shape {values.shape}")
    if max_samples is not None and values.ndim > 0 and values.size > max(int(max_samples), 1):
        step = _lattice_step(values.shape, max(int(max_samples), 1))
        lattice = (slice(None, None, step),) * values.ndim
        values = values[lattice]
        mask = None if mask is None else mask[lattice]
    values = values[mask] if mask is not None else values.reshape(-1)
    values = values.astype(np.float64, copy=False)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite voxels to compute percentiles from")
    lo, hi = np.percentile(values, [lower, upper])
    return float(lo), float(hi)


def normalize_percentile(
    array: np.ndarray,
    lower: float = DEFAULT_PERCENTILES[0],
    upper: float = DEFAULT_PERCENTILES[1],
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Map the ``lower``..``upper`` percentile range of ``array`` linearly onto ``[0, 1]``, clipped.

    The percentiles are computed over **all of** ``array`` (or the voxels where ``mask`` is true),
    exactly, without subsampling. For a whole volume that is what MR needs; do not call this per
    slice (each slice would get its own range) — use :class:`IntensityTransform` via
    :func:`resolve_intensity`, which fixes the range once.

    Parameters
    ----------
    array : ndarray, any shape
        Voxel values.
    lower, upper : float
        Percentiles in ``[0, 100]``.
    mask : ndarray of bool, same shape as ``array``, optional
        Voxels that count for the percentiles; the output still covers every voxel.

    Returns
    -------
    ndarray of float32, same shape as ``array``
        In ``[0, 1]``. A volume whose two percentiles are equal maps to 0 at or below that
        value and 1 above it.

    Examples
    --------
    >>> x = np.r_[np.linspace(0.0, 1.0, 1001), 1e6]  # one extreme outlier
    >>> float(normalize_percentile(x, 0, 99.5)[500]) > 0.49
    True
    """
    lo, hi = volume_percentiles(array, lower, upper, mask=mask, max_samples=None)
    return _apply_range(array, lo, hi)


def rescale_minmax(
    array: np.ndarray, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Map ``[low, high]`` (default: the array's finite min and max) linearly onto ``[0, 1]``.

    Parameters
    ----------
    array : ndarray, any shape
    low, high : float, optional
        The values that map to 0 and 1; values outside are clipped.

    Returns
    -------
    ndarray of float32, same shape as ``array``
        A constant array maps to all zeros.

    Examples
    --------
    >>> rescale_minmax(np.array([2, 4, 6])).tolist()
    [0.0, 0.5, 1.0]
    """
    a = np.asarray(array)
    if low is None or high is None:
        finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
        if finite.size == 0:
            return np.zeros(a.shape, dtype=np.float32)
        low = float(finite.min()) if low is None else low
        high = float(finite.max()) if high is None else high
    return _apply_range(a, low, high)


# -- the recorded transform ---------------------------------------------------------------------
@dataclass(frozen=True)
class IntensityTransform:
    """A fully resolved intensity transform: fixed parameters, applied identically to any slice.

    Build one with :func:`resolve_intensity` or the class methods :meth:`window`,
    :meth:`fixed_range`, :meth:`from_percentiles`, :meth:`identity`.

    Attributes
    ----------
    kind : {"window", "percentile", "range", "identity"}
        ``"window"``: DICOM VOI window (``center``, ``width``, ``function``).
        ``"percentile"``: a range ``low..high`` that *was* computed from percentiles
        ``lower_percentile``/``upper_percentile`` of one volume; applying it no longer looks at
        the data. ``"range"``: a given range ``low..high``. ``"identity"``: values assumed
        already in ``[0, 1]``; cast to float32 and clipped.
    name : str
        Preset name or a short label (``"soft_tissue"``, ``"percentile"``, ``"custom"``).
    center, width : float or None
        Window parameters, in the volume's units (HU for CT).
    low, high : float or None
        Range limits in the volume's units (``"percentile"``/``"range"``).
    lower_percentile, upper_percentile : float or None
        The percentiles a ``"percentile"`` transform was resolved from (for the record).
    function : {"linear", "linear_exact"}
        DICOM VOI LUT function of a window.
    """

    kind: Literal["window", "percentile", "range", "identity"]
    name: str
    center: float | None = None
    width: float | None = None
    low: float | None = None
    high: float | None = None
    lower_percentile: float | None = None
    upper_percentile: float | None = None
    function: WindowFunction = "linear"

    def __post_init__(self) -> None:
        if self.kind == "window":
            if self.center is None or self.width is None:
                raise ValueError("a window transform needs center and width")
            _window_ramp(self.center, self.width, self.function)
        elif self.kind in ("percentile", "range"):
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.kind} transform needs low and high")
            _range_ramp(self.low, self.high)
        elif self.kind != "identity":
            raise ValueError(
                f"unknown intensity transform kind {self.kind!r}; "
                "use 'window', 'percentile', 'range' or 'identity'"
            )

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def window(
        cls,
        center: float,
        width: float,
        *,
        name: str = "custom",
        function: WindowFunction = "linear",
    ) -> IntensityTransform:
        """A DICOM VOI window (see :func:`apply_window`)."""
        return cls("window", name, center=float(center), width=float(width), function=function)

    @classmethod
    def preset(cls, name: str, *, function: WindowFunction = "linear") -> IntensityTransform:
        """A window from :data:`CT_WINDOWS`; ``ValueError`` listing the presets if unknown."""
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in CT_WINDOWS:
            raise ValueError(f"unknown CT window preset {name!r}; presets: {', '.join(CT_WINDOWS)}")
        p = CT_WINDOWS[key]
        return cls.window(p.center, p.width, name=key, function=function)

    @classmethod
    def fixed_range(cls, low: float, high: float, *, name: str = "range") -> IntensityTransform:
        """Map ``low..high`` linearly onto ``[0, 1]``, clipped."""
        return cls("range", name, low=float(low), high=float(high))

    @classmethod
    def from_percentiles(
        cls,
        array: np.ndarray,
        lower: float = DEFAULT_PERCENTILES[0],
        upper: float = DEFAULT_PERCENTILES[1],
        *,
        mask: np.ndarray | None = None,
        max_samples: int | None = PERCENTILE_MAX_SAMPLES,
    ) -> IntensityTransform:
        """Compute the percentiles of a whole volume once (see :func:`volume_percentiles`)
        and freeze them as the range."""
        lo, hi = volume_percentiles(array, lower, upper, mask=mask, max_samples=max_samples)
        return cls(
            "percentile",
            "percentile",
            low=lo,
            high=hi,
            lower_percentile=float(lower),
            upper_percentile=float(upper),
        )

    @classmethod
    def identity(cls) -> IntensityTransform:
        """Values already in ``[0, 1]``: cast to float32 and clip."""
        return cls("identity", "identity")

    # -- use ---------------------------------------------------------------------------------
    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Apply to a volume, a slice or any array: elementwise, so slicing commutes with it.

        Parameters
        ----------
        array : ndarray, any shape
            Values in the volume's units (HU for CT).

        Returns
        -------
        ndarray of float32, same shape, values in ``[0, 1]``.
        """
        if self.kind == "window":
            assert self.center is not None and self.width is not None
            return apply_window(array, self.center, self.width, function=self.function)
        if self.kind in ("percentile", "range"):
            assert self.low is not None and self.high is not None
            return _apply_range(array, self.low, self.high)
        return _ramp(array, 0.0, 1.0, 0.0)

    @property
    def limits(self) -> tuple[float, float]:
        """Input values ``(black, white)`` at which the output reaches 0 and 1.

        In the volume's units; e.g. a display's contrast limits. For the DICOM linear window
        these are ``c - 0.5 -+ (w - 1) / 2``, i.e. ``(c - w/2, c + w/2 - 1)``.

        >>> IntensityTransform.preset("soft_tissue").limits
        (-160.0, 239.0)
        """
        if self.kind == "window":
            assert self.center is not None and self.width is not None
            pivot, denom, mid = _window_ramp(self.center, self.width, self.function)
            return pivot - mid * denom, pivot + (1.0 - mid) * denom
        if self.kind in ("percentile", "range"):
            assert self.low is not None and self.high is not None
            return self.low, self.high
        return 0.0, 1.0

    @property
    def parameters(self) -> dict[str, float | str]:
        """The parameters that define the mapping (for logs and provenance records)."""
        if self.kind == "window":
            return {"center": self.center, "width": self.width, "function": self.function}  # type: ignore[dict-item]
        if self.kind == "percentile":
            return {
                "low": self.low,
                "high": self.high,
                "lower_percentile": self.lower_percentile,
                "upper_percentile": self.upper_percentile,
            }  # type: ignore[dict-item]
        if self.kind == "range":
            return {"low": self.low, "high": self.high}  # type: ignore[dict-item]
        return {}

    def describe(self) -> str:
        """One line saying what the transform does, e.g. for a status bar or a log.

        >>> IntensityTransform.preset("lung").describe()
        'window lung: center -600, width 1500 (DICOM PS3.3 C.11.2.1.2.1 linear) -> [0, 1]'
        """
        if self.kind == "window":
            fn = "C.11.2.1.2.1 linear" if self.function == "linear" else "C.11.2.1.3.2 linear exact"
            return (
                f"window {self.name}: center {self.center:g}, width {self.width:g} "
                f"(DICOM PS3.3 {fn}) -> [0, 1]"
            )
        if self.kind == "percentile":
            return (
                f"percentile {self.lower_percentile:g}-{self.upper_percentile:g} of the volume: "
                f"{self.low:.6g}..{self.high:.6g} -> [0, 1]"
            )
        if self.kind == "range":
            return f"range {self.name}: {self.low:.6g}..{self.high:.6g} -> [0, 1]"
        return "identity: values clipped to [0, 1]"


def resolve_intensity(
    volume: Volume,
    window: str | tuple[float, float] | IntensityTransform | None = None,
) -> IntensityTransform:
    """Choose the intensity transform for a volume, once, with all parameters fixed.

    Parameters
    ----------
    volume : Volume
        The volume the frames come from (``array`` in HU for CT).
    window : None, str, (center, width) or IntensityTransform
        * ``None`` or ``"auto"``: CT -> the :data:`DEFAULT_CT_WINDOW` preset (``soft_tissue``,
          40/400 HU). A named preset is preferred over the window stored in the DICOM header
          because it looks the same for every scanner; that stored window stays available as
          ``volume.window`` and as ``window="dicom"``. Every other modality -> the
          :data:`DEFAULT_PERCENTILES` (0.5-99.5) of the whole volume, computed once on at most
          :data:`PERCENTILE_MAX_SAMPLES` voxels (an evenly strided subsample of larger volumes),
          then frozen as a fixed range.
        * a preset name from :data:`CT_WINDOWS` (case-insensitive). A CT preset is allowed on a
          non-CT volume (it is applied to the values as they are); that is rarely meaningful.
        * ``"dicom"``: the volume's stored :class:`~sam2_med.WindowHint`.
        * ``"percentile"``: the percentile default above, for any modality.
        * ``"minmax"``: the volume's finite minimum..maximum.
        * ``(center, width)``: a custom window in the volume's units.
        * an :class:`IntensityTransform`: returned unchanged.

    Returns
    -------
    IntensityTransform

    Raises
    ------
    ValueError
        Unknown preset (the message lists the presets), ``"dicom"`` without a stored window,
        an invalid center/width.
    """
    if isinstance(window, IntensityTransform):
        return window
    if window is None or (isinstance(window, str) and window.strip().lower() == "auto"):
        if (volume.modality or "").upper() == "CT":
            return IntensityTransform.preset(DEFAULT_CT_WINDOW)
        return IntensityTransform.from_percentiles(volume.array, *DEFAULT_PERCENTILES)
    if isinstance(window, str):
        key = window.strip().lower()
        if key == "dicom":
            hint = volume.window
            if hint is None:
                raise ValueError(
                    "the 'dicom' window was asked for but the volume stores no window center/width"
                )
            name = hint.explanation or "dicom"
            width = max(float(hint.width), 1.0)
            return IntensityTransform.window(hint.center, width, name=name)
        if key == "percentile":
            return IntensityTransform.from_percentiles(volume.array, *DEFAULT_PERCENTILES)
        if key == "minmax":
            a = np.asarray(volume.array)
            finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
            if finite.size == 0:
                raise ValueError("window='minmax' but the volume has no finite voxels")
            return IntensityTransform.fixed_range(finite.min(), finite.max(), name="minmax")
        try:
            return IntensityTransform.preset(key)
        except ValueError:
            raise ValueError(
                f"unknown intensity window {window!r}; use auto, dicom, percentile, minmax, a "
                f"center and width, or a CT preset: {', '.join(CT_WINDOWS)}"
            ) from None
    try:
        center, width = window  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(
            f"window must be None, a name, (center, width) or an IntensityTransform, got {window!r}"
        ) from None
    return IntensityTransform.window(float(center), float(width), name="custom")
