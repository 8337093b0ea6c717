"""Intensity transforms: DICOM window formula, clipping, dtype, slice-wise equality, robustness."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from sam2_med import Volume, WindowHint, intensity
from sam2_med.intensity import (
    CT_WINDOWS,
    IntensityTransform,
    apply_window,
    normalize_percentile,
    rescale_minmax,
    resolve_intensity,
    volume_percentiles,
)


def test_doctests() -> None:
    result = doctest.testmod(intensity, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# (center, width, x, expected) for the DICOM PS3.3 C.11.2.1.2.1 linear function onto [0, 1]:
# y = clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1); black at x <= c - 0.5 - (w-1)/2,
# white at x > c - 0.5 + (w-1)/2.
LINEAR_CASES = [
    (40, 400, 40 - 0.5 - 399 / 2, 0.0),  # lower breakpoint: exactly black
    (40, 400, 40 - 0.5 - 399 / 2 - 1, 0.0),
    (40, 400, 40 - 0.5 + 399 / 2, 1.0),  # upper breakpoint: white
    (40, 400, 39.5, 0.5),  # c - 0.5 is mid-grey
    (40, 400, 40, 0.5 + 0.5 / 399),
    (40, 400, -160, 0.0),  # c - w/2 is the lower breakpoint itself
    (40, 400, -159, 1 / 399),
    (40, 400, 239, 1.0),  # c - 1 + w/2 is the upper breakpoint
    (40, 400, 238, 398 / 399),
    (40, 400, 240, 1.0),
    (-600, 1500, -600.5, 0.5),
    (-600, 1500, -1350.0, 0.0),
    (400, 1800, 1300, 1.0),
    (40, 80, 0, 0.0),
    (40, 80, 1, 1 / 79),
]

LINEAR_EXACT_CASES = [
    (40, 400, -160, 0.0),
    (40, 400, 240, 1.0),
    (40, 400, 40, 0.5),
    (40, 400, 140, 0.75),
    (-600, 1500, -1350, 0.0),
    (-600, 1500, 150, 1.0),
    (-600, 1500, -975, 0.25),
]


@pytest.mark.parametrize(("center", "width", "x", "expected"), LINEAR_CASES)
def test_dicom_linear_window_values(center, width, x, expected) -> None:
    y = apply_window(np.array([x], dtype=np.float64), center, width)
    assert y.dtype == np.float32
    assert y[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("center", "width", "x", "expected"), LINEAR_EXACT_CASES)
def test_dicom_linear_exact_window_values(center, width, x, expected) -> None:
    y = apply_window(np.array([x], dtype=np.float64), center, width, function="linear_exact")
    assert y[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", list(CT_WINDOWS))
def test_window_monotonic_clipped_float32(dtype, name) -> None:
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo = max(-3000, info.min) if info else -3000
    hi = min(4000, info.max) if info else 4000
    x = np.arange(lo, hi, dtype=dtype)
    p = CT_WINDOWS[name]
    y = apply_window(x, p.center, p.width)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.all(np.diff(y) >= 0)
    if lo < p.limits[0] - 1:
        assert y[0] == 0.0
    if hi > p.limits[1] + 1:
        assert y[-1] == 1.0


def test_window_does_not_modify_input_and_handles_nonfinite() -> None:
    x = np.array([np.nan, -np.inf, np.inf, 40.0])
    before = x.copy()
    y = apply_window(x, 40, 400)
    np.testing.assert_array_equal(x, before)
    assert y.tolist()[:3] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("center", "width", "function"),
    [(40, 0.5, "linear"), (40, 0, "linear_exact"), (np.nan, 400, "linear"), (40, 400, "cubic")],
)
def test_window_rejects_bad_parameters(center, width, function) -> None:
    with pytest.raises(ValueError):
        apply_window(np.zeros(3), center, width, function=function)


def test_presets_are_valid_and_cited() -> None:
    for name in ("soft_tissue", "abdomen", "lung", "bone", "brain", "mediastinum", "liver"):
        p = CT_WINDOWS[name]
        assert p.width >= 1 and p.source
    assert (CT_WINDOWS["soft_tissue"].center, CT_WINDOWS["soft_tissue"].width) == (40, 400)
    assert (CT_WINDOWS["lung"].center, CT_WINDOWS["lung"].width) == (-600, 1500)
    assert (CT_WINDOWS["brain"].center, CT_WINDOWS["brain"].width) == (40, 80)
    assert CT_WINDOWS["soft_tissue"].limits == (-160.0, 240.0)
    with pytest.raises(TypeError):
        CT_WINDOWS["mine"] = CT_WINDOWS["lung"]  # type: ignore[index]


def test_percentile_robust_to_outliers() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 10.0, size=(20, 20, 20))
    x[0, 0, :5] = 1e6  # a handful of hot voxels (< 0.5 %)
    x[1, 1, :5] = -1e6
    y = normalize_percentile(x)
    assert y.dtype == np.float32 and y.min() == 0.0 and y.max() == 1.0
    core = y[2:, 2:, :]
    assert 0.4 < float(np.median(core)) < 0.6
    assert float(core.std()) > 0.1  # contrast not squashed by the outliers


def test_percentile_mask_and_exact_values() -> None:
    x = np.zeros((10, 10, 11))
    x[:, :, 1:] = np.arange(1, 11)[None, None, :]  # zero background plus values 1..10
    lo, hi = volume_percentiles(x, 0, 100, mask=x != 0)
    assert (lo, hi) == (1.0, 10.0)
    assert volume_percentiles(np.arange(101.0), 10, 90) == (10.0, 90.0)
    with pytest.raises(ValueError):
        volume_percentiles(x, 60, 40)


def test_percentile_subsample_close_to_full() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, size=300_000)
    full = volume_percentiles(x, 0.5, 99.5, max_samples=None)
    sub = volume_percentiles(x, 0.5, 99.5, max_samples=50_000)
    assert sub == pytest.approx(full, abs=0.1)


def test_percentile_subsample_is_a_lattice_not_a_flat_stride() -> None:
    # a flat C-order stride of 3 would see only the k = 0 plane here
    x = np.broadcast_to(np.arange(3.0), (50, 50, 3))
    assert volume_percentiles(x, 0, 100, max_samples=2500) == (0.0, 2.0)
    mask = np.ones(x.shape, dtype=bool)
    assert volume_percentiles(x, 0, 100, mask=mask, max_samples=2500) == (0.0, 2.0)


@pytest.mark.parametrize(
    ("transform", "limits"),
    [
        (IntensityTransform.preset("soft_tissue"), (-160.0, 239.0)),
        (IntensityTransform.preset("lung", function="linear_exact"), (-1350.0, 150.0)),
        (IntensityTransform.fixed_range(-5, 7), (-5.0, 7.0)),
        (IntensityTransform.identity(), (0.0, 1.0)),
    ],
)
def test_transform_limits_map_to_zero_and_one(transform, limits) -> None:
    assert transform.limits == pytest.approx(limits)
    y = transform(np.array(transform.limits))
    assert y.tolist() == [0.0, 1.0]


def test_rescale_minmax() -> None:
    assert rescale_minmax(np.array([2, 4, 6])).tolist() == [0.0, 0.5, 1.0]
    assert rescale_minmax(np.full((2, 2), 7.0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert rescale_minmax(np.array([0.0, 5.0, 20.0]), 0, 10).tolist() == [0.0, 0.5, 1.0]


def _volume(array, modality="CT", window=None) -> Volume:
    return Volume(array, np.diag([0.8, 0.8, 2.5, 1.0]), modality=modality, window=window)


@pytest.mark.parametrize("spec", [None, "auto", "lung", "percentile", "minmax", "dicom", (50, 350)])
def test_transform_slicewise_equals_whole_volume(spec) -> None:
    rng = np.random.default_rng(2)
    hu = rng.integers(-1024, 2000, size=(17, 13, 9)).astype(np.int16)
    for modality in ("CT", "MR"):
        vol = _volume(hu, modality, WindowHint(40, 400, "SOFT"))
        t = resolve_intensity(vol, spec)
        whole = t(vol.array)
        assert whole.dtype == np.float32 and whole.min() >= 0 and whole.max() <= 1
        for axis in range(3):
            for k in range(vol.shape[axis]):
                sl = np.take(vol.array, k, axis=axis)
                np.testing.assert_array_equal(t(sl), np.take(whole, k, axis=axis))


def test_resolve_auto_ct_uses_soft_tissue_and_mr_percentiles() -> None:
    hu = np.arange(-1000, 1000, dtype=np.int16).reshape(20, 10, 10)
    t = resolve_intensity(_volume(hu, "CT"))
    assert (t.kind, t.name, t.center, t.width) == ("window", "soft_tissue", 40.0, 400.0)
    m = resolve_intensity(_volume(hu.astype(np.float32) + 1000, "MR"))
    assert m.kind == "percentile"
    assert m.low == pytest.approx(np.percentile(np.arange(2000.0), 0.5))
    assert m.high == pytest.approx(np.percentile(np.arange(2000.0), 99.5))
    assert "percentile 0.5-99.5" in m.describe()


def test_resolve_named_custom_and_errors() -> None:
    vol = _volume(np.zeros((4, 4, 4), np.int16), window=WindowHint(300, 1500, "BONE"))
    assert resolve_intensity(vol, "Lung").name == "lung"
    assert resolve_intensity(vol, "soft-tissue").name == "soft_tissue"
    dicom = resolve_intensity(vol, "dicom")
    assert (dicom.center, dicom.width, dicom.name) == (300.0, 1500.0, "BONE")
    custom = resolve_intensity(vol, (50, 350))
    assert (custom.center, custom.width) == (50.0, 350.0)
    same = IntensityTransform.fixed_range(0, 1)
    assert resolve_intensity(vol, same) is same
    with pytest.raises(ValueError, match="soft_tissue"):
        resolve_intensity(vol, "bones")
    with pytest.raises(ValueError):
        resolve_intensity(_volume(np.zeros((4, 4, 4))), "dicom")
    with pytest.raises(ValueError):
        resolve_intensity(vol, 3.0)  # type: ignore[arg-type]
    # a CT preset on MR is allowed (documented as rarely meaningful)
    assert resolve_intensity(_volume(np.zeros((4, 4, 4)), "MR"), "brain").kind == "window"


def test_transform_validation_and_describe() -> None:
    with pytest.raises(ValueError):
        IntensityTransform("window", "x")
    with pytest.raises(ValueError):
        IntensityTransform("range", "x", low=5, high=1)
    with pytest.raises(ValueError):
        IntensityTransform("gamma", "x")  # type: ignore[arg-type]
    t = IntensityTransform.preset("bone")
    assert "center 400" in t.describe() and "C.11.2.1.2.1" in t.describe()
    assert t.parameters == {"center": 400.0, "width": 1800.0, "function": "linear"}
    ident = IntensityTransform.identity()
    assert ident(np.array([-1.0, 0.25, 2.0])).tolist() == [0.0, 0.25, 1.0]
    with pytest.raises(AttributeError):
        t.center = 3.0  # type: ignore[misc]


def test_constant_volume_percentile_is_a_step() -> None:
    vol = _volume(np.full((3, 3, 3), 5.0), "MR")
    t = resolve_intensity(vol)
    y = t(np.array([4.0, 5.0, 6.0]))
    assert y.tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("old", "new", "key", "says"),
    [
        ("    width: 1500\n", "    width: 0.5\n", "ct_windows.lung.width", "at least 1 HU"),
        ("    center: -600\n", "    centre: -600\n", "ct_windows.lung.center", "'centre' a miss"),
        ("default_ct_window: soft_tissue", "default_ct_window: st", "default_ct_window", "'st'"),
        (
            "default_percentiles: [0.5, 99.5]",
            "default_percentiles: [99.5, 0.5]",
            "default_percentiles",
            "lower < upper",
        ),
        ("\nct_windows:\n", "\nct_windows:\n  extra: 1\n", "ct_windows.extra", "a mapping"),
    ],
)
def test_a_broken_presets_file_names_the_file_and_key(tmp_path, monkeypatch, old, new, key, says):
    from sam2_med import config
    from sam2_med.errors import ConfigError
    from sam2_med.intensity import _read_presets

    text = (config.package_config_dir() / "intensity.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1
    (tmp_path / "intensity.yaml").write_text(text.replace(old, new), encoding="utf-8")
    monkeypatch.setattr(config, "package_config_dir", lambda: tmp_path)
    with pytest.raises(ConfigError) as info:
        _read_presets()
    assert str(info.value).startswith(f"{tmp_path / 'intensity.yaml'}: key {key!r}: ")
    assert says in str(info.value)
