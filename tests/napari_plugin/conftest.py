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
    """Path (str) of the phantom NIfTI image written by :func:`sam2_med.phantom.write_phantom`."""
    from sam2_med.phantom import write_phantom

    return str(write_phantom(tmp_path / "phantom")["image"])
