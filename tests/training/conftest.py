"""Fixtures for the training tests: small labelled volumes on disk and a tiny architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sam2_med.models import TINY_ARCH

SMALL = {"shape": (56, 48, 16), "spacing": (1.8, 1.8, 6.0)}


@pytest.fixture(autouse=True)
def _no_network_no_user_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("SAM2_MED_OFFLINE", "1")
    monkeypatch.setenv("SAM2_MED_CACHE", str(tmp_path_factory.mktemp("cache")))


def write_case(folder: Path, seed: int, orientation: str = "LPS") -> tuple[Path, Path]:
    """The fixed phantom at a small size as NIfTI image + label map (with names)."""
    from sam2_med.io import save_mask
    from sam2_med.phantom import PHANTOM_LABELS, _write_nifti_image, make_phantom

    vol, lab = make_phantom(seed=seed, orientation=orientation, **SMALL)
    folder.mkdir(parents=True, exist_ok=True)
    img, labels = folder / f"case{seed}.nii.gz", folder / f"case{seed}_labels.nii.gz"
    _write_nifti_image(vol, img)
    save_mask(lab, labels, reference=vol, label_names=dict(PHANTOM_LABELS))
    return img, labels


@pytest.fixture(scope="session")
def cases(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two training cases and one validation case, plus a datalist naming them."""
    root = tmp_path_factory.mktemp("data")
    out = {
        "train0": write_case(root / "train", 0),
        "train1": write_case(root / "train", 1, "RAS"),
        "val": write_case(root / "val", 2, "oblique"),
    }
    datalist = {
        "training": [
            {"image": str(p[0].relative_to(root)), "label": str(p[1].relative_to(root))}
            for k, p in out.items()
            if k.startswith("train")
        ],
        "validation": [
            {
                "image": str(out["val"][0].relative_to(root)),
                "label": str(out["val"][1].relative_to(root)),
            }
        ],
    }
    (root / "datalist.json").write_text(json.dumps(datalist))
    out["datalist"] = (root / "datalist.json", root)
    return out


@pytest.fixture(scope="session")
def tiny_arch_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("arch") / "arch.json"
    p.write_text(json.dumps(TINY_ARCH))
    return p


def labels_of(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj)
