"""``sam2-med info`` and ``sam2-med weights``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_path


def test_info_nifti_lps(cli):
    path = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    code, out, err = cli("info", path)
    assert code == 0, err
    assert "shape (i,j,k): 117 x 91 x 20" in out
    assert "spacing:      3 x 3 x 3 mm" in out
    assert "orientation:  LPS" in out
    assert "axial along k (20)" in out
    assert "ITK-SNAP shows them 1-based" in out
    code, out, _ = cli("info", path, "--json")
    d = json.loads(out)["volume"]
    img = nib.load(path)
    np.testing.assert_allclose(d["affine_ras"], img.affine, atol=1e-5)
    np.testing.assert_allclose(d["affine_lps"], np.diag([-1, -1, 1, 1]) @ img.affine, atol=1e-5)
    assert d["shape_ijk"] == list(img.shape) and d["orientation"] == "LPS"


def test_info_dicom_folder_lists_series_and_geometry(cli):
    folder = shared_path("dicom", "ct_siemens_j2k", "series")
    code, out, err = cli("info", folder)
    assert code == 0, err
    assert "1 DICOM series" in out and "20 slices 512x512" in out
    assert "modality:     CT" in out
    assert "window hint:  center 40, width 300" in out
    assert "spacing:      0.976562 x 0.976562 x 2 mm" in out  # from positions, not thickness
    code, out, _ = cli("info", folder, "--json")
    d = json.loads(out)
    assert d["series"][0]["slices"] == 20 and d["volume"]["modality"] == "CT"


def test_weights_list_shows_registry_licences_and_cache(cli, tmp_path):
    code, out, err = cli("weights", "list", "--cache-dir", tmp_path)
    assert code == 0, err
    assert f"weights cache: {tmp_path}" in out
    assert "sam2.1_hiera_tiny (default)" in out and "medsam2" in out
    assert "licence: Apache-2.0" in out and "not cached" in out
    assert "sha256: none published" in out  # medsam2


def test_weights_import_refuses_wrong_files(cli, tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    code, _, err = cli(
        "weights", "import", ckpt, "--model", "sam2.1_hiera_tiny", "--cache-dir", tmp_path
    )
    assert code == 2 and "sha256" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("weights", "import", ckpt, "--model", "medsam2", "--cache-dir", tmp_path)
    assert code == 2 and err.startswith(f"sam2-med: error: {ckpt}: ")
    code, _, err = cli("weights", "import", tmp_path / "none.pt", "--model", "medsam2")
    assert code == 2 and "no such file" in err
    code, out, _ = cli("weights", "verify", "--cache-dir", tmp_path)
    assert code == 0 and "no cached weights" in out


def test_weights_without_action_prints_help(cli):
    code, _, err = cli("weights")
    assert code == 2 and "list" in err and "import" in err


@pytest.mark.slow
def test_weights_import_list_verify_roundtrip(cli, tmp_path):
    """A random model with MedSAM2's architecture (no published checksum) imports, lists as
    cached and verifies as unchanged; corrupting it makes verify fail with exit code 2."""
    from sam2_med.models import arch_to_config, get_spec, random_model, save_meta_checkpoint

    spec = get_spec("medsam2")
    ckpt = save_meta_checkpoint(
        random_model(arch_to_config(spec.arch_dict())), tmp_path / "MedSAM2_latest.pt"
    )
    cache = tmp_path / "cache"
    code, out, err = cli("weights", "import", ckpt, "--model", "medsam2", "--cache-dir", cache)
    assert code == 0, err
    assert "imported" in out and "research use" in out
    code, out, _ = cli("weights", "list", "--cache-dir", cache)
    assert "cached" in out.split("medsam2")[1]
    code, out, _ = cli("weights", "verify", "--cache-dir", cache)
    assert code == 0 and "medsam2: unverified" in out
    cached = cache / "medsam2" / "MedSAM2_latest.pt"
    with open(cached, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    code, out, err = cli("weights", "verify", "--cache-dir", cache)
    assert code == 2 and "changed since recorded" in out and "failed verification" in err


def test_offline_weights_message_is_short_lines_with_direct_links(cli, tmp_path):
    """Item 15: a few short lines (not one 800-character line), direct download links (no
    ``/blob/`` web page), the exact file the import creates, and the --checkpoint alternative."""
    image = tmp_path / "img.nii.gz"
    import nibabel as nib
    import numpy as np

    nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)).to_filename(image)
    code, _, err = cli("segment", image, "--point", "4,4,4", "--out", tmp_path / "m.nii.gz")
    assert code == 2
    start = next(i for i, ln in enumerate(err.splitlines()) if ln.startswith("sam2-med: error:"))
    msg = err.splitlines()[start:]
    assert 3 <= len(msg) <= 9, msg
    assert all(len(ln) <= 160 for ln in msg), msg
    text = "\n".join(msg)
    assert "/blob/" not in text
    assert (
        "https://huggingface.co/facebook/sam2.1-hiera-tiny/resolve/main/sam2.1_hiera_tiny.pt"
        in (text)
    )
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in text
    from sam2_med.models import default_cache_dir

    target = default_cache_dir() / "sam2.1_hiera_tiny" / "sam2.1_hiera_tiny.pt"
    assert str(target) in text
    assert "sam2-med weights import sam2.1_hiera_tiny.pt --model sam2.1_hiera_tiny" in text
    assert "--checkpoint" in text


def test_failed_import_leaves_no_empty_cache_folders(cli, tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    cache = tmp_path / "new" / "cache"
    code, _, err = cli(
        "weights", "import", ckpt, "--model", "sam2.1_hiera_tiny", "--cache-dir", cache
    )
    assert code == 2 and "sha256" in err
    assert not (tmp_path / "new").exists()
    cache.mkdir(parents=True)
    code, _, err = cli("weights", "import", ckpt, "--model", "medsam2", "--cache-dir", cache)
    assert code == 2
    assert list(cache.iterdir()) == []  # the existing cache stays, no model folder is left
