"""The random phantoms: seeded, varied, exact labels, disjoint training and evaluation seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sam2_med import geometry
from sam2_med.phantom import (
    EVAL_SEEDS,
    RANDOM_LABELS,
    TRAIN_SEEDS,
    make_random_phantom,
    phantom_seed,
    seed_split,
    write_random_phantom,
)


def test_seed_ranges_never_overlap() -> None:
    assert TRAIN_SEEDS.stop <= EVAL_SEEDS.start
    assert seed_split(phantom_seed("train", 7)) == "train"
    assert seed_split(phantom_seed("eval", 7)) == "eval"
    assert seed_split(-1) == "other"
    with pytest.raises(IndexError):
        phantom_seed("eval", len(EVAL_SEEDS))
    with pytest.raises(ValueError, match="unknown split"):
        phantom_seed("test", 0)


def test_same_seed_same_voxels_other_seed_other_anatomy() -> None:
    a, la = make_random_phantom(11)
    b, lb = make_random_phantom(11)
    c, lc = make_random_phantom(12)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(la.array, lb.array)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.shape != c.shape or not np.array_equal(la.array, lc.array)


def test_variety_over_seeds() -> None:
    """Orientations, both contrasts, spacings and lesions all occur within a few seeds."""
    seen = {"orientation": set(), "modality": set()}
    slice_mm, lesions = [], 0
    for s in range(24):
        vol, lab = make_random_phantom(phantom_seed("eval", s))
        extra = vol.provenance.extra
        seen["orientation"].add(extra["orientation"])
        seen["modality"].add(vol.modality)
        slice_mm.append(vol.spacing[2])
        lesions += extra["lesions"] > 0 and bool((lab.array == 7).any())
        assert extra["split"] == "eval" and set(lab.names) == set(RANDOM_LABELS)
        if extra["orientation"] == "oblique":
            assert geometry.is_oblique(vol.affine)
    assert seen == {"orientation": {"LPS", "RAS", "oblique"}, "modality": {"CT", "MR"}}
    assert min(slice_mm) < 2.0 and max(slice_mm) > 4.0 and lesions >= 3


def test_labels_are_exact_and_tissue_consistent() -> None:
    """CT: every organ's voxels carry that organ's values (up to texture and noise)."""
    vol, lab = make_random_phantom(3, modality="CT")
    hu = vol.array.astype(np.float64)
    body = hu > -500
    assert lab.array[~body].max() == 0  # no organ outside the body
    for value in (1, 2, 5):
        m = lab.array == value
        if m.sum() > 100:
            # organs are homogeneous: the spread is noise and texture, far below organ contrast
            assert np.std(hu[m]) < 40, RANDOM_LABELS[value]
    assert vol.array.dtype == np.int16 and lab.array.dtype == np.uint8


def test_mr_contrast() -> None:
    vol, _ = make_random_phantom(5, modality="MR")
    assert vol.modality == "MR" and vol.window is None and vol.array.min() >= 0


def test_write_random_phantom(tmp_path) -> None:
    from sam2_med.io import OutputExistsError, load_volume

    paths = write_random_phantom(tmp_path, phantom_seed("eval", 1))
    img = load_volume(paths["image"])
    vol, lab = make_random_phantom(phantom_seed("eval", 1))
    np.testing.assert_array_equal(img.array, vol.array)
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
    labels = load_volume(paths["labels"])
    np.testing.assert_array_equal(labels.array, lab.array)
    prompts = json.loads(paths["prompts"].read_text())
    assert prompts["space"] == "voxel"
    for obj in prompts["objects"]:
        i, j, k, positive = obj["points"][0]
        assert positive == 1 and lab.array[i, j, k] == obj["label"]
    with pytest.raises(OutputExistsError):
        write_random_phantom(tmp_path, phantom_seed("eval", 1))
