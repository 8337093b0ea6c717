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


@pytest.fixture
def small_mr(tmp_path):
    """Path (str) of a small synthetic MR-like NIfTI (48 x 40 x 16, 2 x 2 x 3 mm, RAS): a bright
    ellipsoid in noise. Quick to propagate with the tiny random model."""
    import numpy as np

    return str(_ellipsoid_image(tmp_path / "small_mr.nii.gz", np.diag([2.0, 2.0, 3.0, 1.0])))


@pytest.fixture
def flipped_mr(tmp_path):
    """Like ``small_mr`` but k runs from superior to inferior (affine diag(2, 2, -3)): the
    voxel slice index and napari's slider number differ (slider = 15 - k)."""
    import numpy as np

    affine = np.diag([2.0, 2.0, -3.0, 1.0])
    affine[2, 3] = 45.0
    return str(_ellipsoid_image(tmp_path / "flipped_mr.nii.gz", affine))


def _ellipsoid_image(path, affine):
    import nibabel as nib
    import numpy as np

    shape = (48, 40, 16)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    inside = ((i - 24) / 14) ** 2 + ((j - 20) / 11) ** 2 + ((k - 8) / 6) ** 2 <= 1
    data = np.random.default_rng(0).normal(100, 10, shape) + 300 * inside
    nib.Nifti1Image(data.astype(np.float32), affine).to_filename(path)
    return path


@pytest.fixture
def tiny_model():
    """A random tiny SAM 2 model (128 px) wrapped as a LoadedModel."""
    models = pytest.importorskip("sam2_med.models")
    return models.LoadedModel.from_module(models.random_model(models.tiny_config(), seed=0))


@pytest.fixture
def answer_dialog(qtbot):
    """``answer_dialog(button) -> texts``: the next modal message box (opened by the code under
    test, e.g. after a click) is answered with ``button`` (a QMessageBox.StandardButton) as a
    user would click it; its text is appended to the returned list."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    def arm(button):
        texts: list[str] = []

        def poll(tries=[0]):  # noqa: B006 - a counter shared by the retries
            box = QApplication.activeModalWidget()
            if isinstance(box, QMessageBox):
                texts.append(box.text() + "\n" + box.informativeText())
                qtbot.mouseClick(box.button(button), _left())
                return
            tries[0] += 1
            if tries[0] < 200:
                QTimer.singleShot(25, poll)

        QTimer.singleShot(0, poll)
        return texts

    return arm


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton
