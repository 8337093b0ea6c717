"""Fixtures for the napari plugin tests.

napari's settings file is pointed at nothing before napari is imported, so reader preferences
set by a test never reach the tester's own napari configuration.
"""

from __future__ import annotations

import os

os.environ.setdefault("NAPARI_CONFIG", "")

import pytest


@pytest.fixture
def phantom_file(tmp_path):
    """Path of the phantom image written by :func:`sam2_med.phantom.write_phantom`."""
    phantom = pytest.importorskip("sam2_med.phantom")
    written = phantom.write_phantom(tmp_path / "phantom")
    return _image_path(written, tmp_path / "phantom")


def _image_path(written, folder):
    """The image file among what ``write_phantom`` returned (its exact return type may vary)."""
    candidates = []
    if isinstance(written, dict):
        candidates = [v for k, v in written.items() if "image" in str(k)]
    elif isinstance(written, (list, tuple)):
        candidates = list(written)
    elif written is not None:
        candidates = [written]
    for c in candidates:
        name = os.fspath(c)
        if name.endswith((".nii.gz", ".nii")) and "label" not in os.path.basename(name):
            return name
    images = sorted(p for p in folder.rglob("*.nii*") if "label" not in p.name)
    assert images, f"write_phantom wrote no image under {folder}"
    return str(images[0])
