"""npe2 reader, writer and manifest: files land at the world coordinates their headers state."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from sam2_med.napari_plugin._layers import geometry_of, layer_world_coords, voxel_to_data
from sam2_med.napari_plugin._reader import get_reader, prefer_sam2med_reader
from tests.conftest import shared_path

MR_NIFTI = ("volumes", "mr_abdomen_small", "image.nii.gz")
DICOM_DIR = ("dicom", "mr_t1_sagittal_siemens_gz", "series")
DICOM_REF = ("dicom", "mr_t1_sagittal_siemens_gz", "reference_dcm2niix.nii.gz")
#: dcm2niix takes this series' slice step from its first two positions (2.0001 mm, the other
#: steps are 2.0000 mm), so its last slice sits 0.0100 mm off that slice's ImagePositionPatient
#: (see tests/io/test_dicom_shared.py); sam2-med's grid passes through every position.
DCM2NIIX_ATOL_MM = 0.0101


def _open(viewer, path):
    layers = viewer.open(str(path), plugin="sam2-med")
    assert len(layers) == 1
    return layers[0]


def _corners(shape):
    return np.array(
        [
            [i, j, k]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ],
        dtype=float,
    )


def test_get_reader_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader([str(tmp_path / "notes.txt")]) is None


def test_get_reader_accepts_nifti_and_dicom_folders():
    assert get_reader(str(shared_path(*MR_NIFTI))) is not None
    assert get_reader(str(shared_path(*DICOM_DIR))) is not None


@pytest.mark.gui
@pytest.mark.shared_data
def test_nifti_lps_volume_sits_where_nibabel_says(make_napari_viewer):
    path = shared_path(*MR_NIFTI)
    viewer = make_napari_viewer()
    layer = _open(viewer, path)
    img = nib.load(path)
    geo = geometry_of(layer.metadata)
    assert geo is not None and geo.volume.shape == img.shape[:3]
    ijk = np.vstack([_corners(img.shape), [[5, 7, 3], [60, 40, 10]]])
    for v in ijk:
        world = np.asarray(layer.data_to_world(voxel_to_data(v, geo.axes)))
        assert np.allclose(world, (img.affine @ [*v, 1.0])[:3], atol=1e-4)
    # the voxel values napari shows are the file's
    assert np.array_equal(geo.from_data(layer.data), np.asanyarray(img.dataobj))


@pytest.mark.gui
@pytest.mark.shared_data
def test_sagittal_dicom_matches_dcm2niix_in_world_space(make_napari_viewer):
    series = shared_path(*DICOM_DIR)
    ref = nib.load(shared_path(*DICOM_REF))
    viewer = make_napari_viewer()
    layer = _open(viewer, series)
    geo = geometry_of(layer.metadata)
    vol = geo.volume
    ref_data = np.asanyarray(ref.dataobj)
    assert sorted(vol.shape) == sorted(ref.shape[:3])
    inv_ref = np.linalg.inv(ref.affine)
    rng = np.random.default_rng(1)
    ijk = np.vstack([_corners(vol.shape), rng.integers(0, vol.shape, size=(200, 3))])
    for v in ijk:
        world = np.asarray(layer.data_to_world(voxel_to_data(v, geo.axes)), dtype=float)
        # the same world point is a voxel centre of dcm2niix's (reoriented) grid ...
        r = np.round((inv_ref @ [*world, 1.0])[:3])
        assert np.abs((ref.affine @ [*r, 1.0])[:3] - world).max() <= DCM2NIIX_ATOL_MM, (v, r)
        # ... holding the same intensity
        assert vol.array[tuple(int(x) for x in v)] == ref_data[tuple(int(x) for x in r)]


@pytest.mark.gui
@pytest.mark.shared_data
def test_world_point_maps_to_the_voxel_that_contains_it(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = _open(viewer, shared_path(*DICOM_DIR))
    vol = geometry_of(layer.metadata).volume
    axes = geometry_of(layer.metadata).axes
    rng = np.random.default_rng(2)
    target = rng.integers(0, vol.shape, size=(20, 3))
    inside = target + rng.uniform(-0.45, 0.45, size=target.shape)
    world = np.array([layer.data_to_world(voxel_to_data(p, axes)) for p in inside])
    points = viewer.add_points(world, name="clicks")  # world coordinates, as a click adds them
    assert geometry_of(layer.metadata).oblique_degrees == 0.0
    assert np.array_equal(
        geometry_of(layer.metadata).world_to_voxel(layer_world_coords(points)), target
    )
    assert np.array_equal(vol.world_to_voxel(layer_world_coords(points)), target)
    # and napari's own world->data mapping (its cursor readout) agrees
    for w, t in zip(world, target, strict=True):
        assert np.array_equal(np.round(layer.world_to_data(w)).astype(int), voxel_to_data(t, axes))


@pytest.mark.gui
@pytest.mark.shared_data
def test_nifti_opens_with_sam2med_once_preferred(make_napari_viewer):
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    path = str(shared_path(*MR_NIFTI))
    viewer = make_napari_viewer()
    settings = get_settings()
    settings.plugins.extension2reader = {}
    # napari 0.9 has no reader priority: two readers claim .nii.gz, and File > Open, drag and
    # drop and the command line (all plugin=None) raise this, then ask in a dialog
    with pytest.raises(MultipleReaderError):
        viewer.open(path, plugin=None)
    assert "*.nii.gz" in prefer_sam2med_reader(settings)
    layers = viewer.open(path, plugin=None)
    assert geometry_of(layers[0].metadata) is not None
    # the GUI's own open path (File > Open, drag and drop) now reads with sam2-med too
    viewer.layers.clear()
    viewer.window._qt_viewer._qt_open([path], stack=False)
    assert len(viewer.layers) == 1 and geometry_of(viewer.layers[0].metadata) is not None
    # a choice the user made is kept
    settings.plugins.extension2reader = {"*.nii.gz": "napari"}
    assert "*.nii.gz" not in prefer_sam2med_reader(settings)
    assert settings.plugins.extension2reader["*.nii.gz"] == "napari"


@pytest.mark.gui
@pytest.mark.shared_data
def test_writer_saves_on_the_source_grid_and_never_overwrites(make_napari_viewer, tmp_path):
    path = shared_path(*MR_NIFTI)
    viewer = make_napari_viewer()
    image = _open(viewer, path)
    geo = geometry_of(image.metadata)
    labels_vol = np.zeros(geo.volume.shape, np.uint8)
    labels_vol[10:30, 20:40, 5:9] = 1
    labels_vol[50:60, 50:55, 12] = 3
    labels = viewer.add_labels(
        geo.to_data(labels_vol), affine=image.affine, metadata={"sam2_med": geo}, name="seg"
    )
    out = tmp_path / "seg.nii.gz"
    viewer.layers.selection = {labels}
    written = viewer.layers.save(str(out), selected=True, plugin="sam2-med")
    assert written[0] == str(out)
    back = nib.load(out)
    assert back.shape == geo.volume.shape
    assert np.allclose(back.affine, nib.load(path).affine, atol=1e-5)
    assert np.array_equal(np.asanyarray(back.dataobj), labels_vol)
    from sam2_med.io import OutputExistsError
    from sam2_med.napari_plugin._writer import write_labels

    data, meta, _ = labels.as_layer_data_tuple()
    with pytest.raises(OutputExistsError):
        write_labels(str(out), data, meta)


@pytest.mark.gui
def test_writer_without_sam2med_metadata_uses_the_layer_transform(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1, 2, 3] = 2
    labels = viewer.add_labels(arr, scale=(2.0, 3.0, 1.5), translate=(10.0, -4.0, 7.0))
    from sam2_med.napari_plugin._writer import write_labels

    data, meta, _ = labels.as_layer_data_tuple()
    out = tmp_path / "plain.nii.gz"
    write_labels(str(out), data, meta)
    back = nib.load(out)
    assert np.allclose(
        back.affine, np.diag([2.0, 3.0, 1.5, 1.0]) + np.c_[np.zeros((4, 3)), [10.0, -4.0, 7.0, 0.0]]
    )
    assert np.array_equal(np.asanyarray(back.dataobj), arr)


def test_writer_sidecar_carries_the_session_record_the_widget_kept(small_mr, tiny_model, tmp_path):
    """napari's own *Save layers* on a layer the widget segmented writes the session's run
    record (interaction log) as the widget's export does: it replays to the saved labels, and
    labels painted after the session are flagged, never passed off as the session's."""
    import json

    from sam2_med import segment
    from sam2_med.io import load_volume
    from sam2_med.napari_plugin._layers import LayerGeometry, remember_run
    from sam2_med.napari_plugin._writer import write_labels
    from sam2_med.session import Session

    volume = load_volume(small_mr)
    s = Session(tiny_model, volume)
    a = s.add_object("blob")
    s.add_prompts(a, points=[[24, 20, 8]], point_labels=[1])
    list(s.propagate())
    s.add_prompts(a, points=[[24, 20, 11]], point_labels=[0])  # a correction
    list(s.propagate())
    lm = s.label_map()
    assert lm.array.any()
    geo = LayerGeometry.for_volume(volume, small_mr)
    meta = {"metadata": {"sam2_med": geo, "sam2_med_label_names": {a: "blob"}}}
    assert write_labels(str(tmp_path / "bare.nii.gz"), geo.to_data(lm.array), meta)
    bare = json.loads((tmp_path / "bare.json").read_text())
    assert "sam2_med_run" not in bare.get("extra", {})  # a layer sam2-med did not segment

    remember_run(meta["metadata"], lm)  # what sync_from_session keeps on the layer
    written = write_labels(str(tmp_path / "saved.nii.gz"), geo.to_data(lm.array), meta)
    assert written == [str(tmp_path / "saved.nii.gz"), str(tmp_path / "saved.json")]
    run = json.loads((tmp_path / "saved.json").read_text())["extra"]["sam2_med_run"]
    assert run["source"] == "napari" and run["labels_match_session"] is True
    assert run["interactions"] == s.interactions()
    replayed = segment(small_mr, tmp_path / "saved.json", model=tiny_model)
    np.testing.assert_array_equal(replayed.labels.array, lm.array)

    painted = lm.array.copy()
    painted[0, 0, 0] = 0 if painted[0, 0, 0] else a  # one voxel painted after the session
    write_labels(str(tmp_path / "painted.nii.gz"), geo.to_data(painted), meta)
    run = json.loads((tmp_path / "painted.json").read_text())["extra"]["sam2_med_run"]
    assert run["labels_match_session"] is False and "differ" in run["note"]


def test_npe2_validate_with_imports():
    res = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "--imports", "sam2_med"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_plugin_package_and_readers_load_no_qt():
    code = (
        "import sys, sam2_med, sam2_med.napari_plugin, sam2_med.napari_plugin._layers\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.gui
def test_phantom_dicom_and_nifti_share_a_grid_and_dicom_labels_save_as_seg(
    make_napari_viewer, tmp_path
):
    import pydicom

    from sam2_med.phantom import write_phantom

    written = write_phantom(tmp_path / "phantom")
    viewer = make_napari_viewer()
    [nifti] = viewer.open(str(written["image"]), plugin="sam2-med")
    [dicom] = viewer.open(str(written["dicom"]), plugin="sam2-med")
    g_n, g_d = geometry_of(nifti.metadata), geometry_of(dicom.metadata)
    assert g_d.volume.provenance.format == "dicom"
    np.testing.assert_allclose(g_d.volume.affine, g_n.volume.affine, atol=1e-3)
    np.testing.assert_allclose(dicom.affine.affine_matrix, nifti.affine.affine_matrix, atol=1e-3)

    labels_vol = np.zeros(g_d.volume.shape, np.uint8)
    labels_vol[40:60, 30:50, 15:25] = 1
    labels = viewer.add_labels(
        g_d.to_data(labels_vol),
        affine=dicom.affine,
        metadata={"sam2_med": g_d, "sam2_med_label_names": {1: "liver"}},
    )
    viewer.layers.selection = {labels}
    out = tmp_path / "seg.dcm"
    assert viewer.layers.save(str(out), selected=True, plugin="sam2-med") == [str(out)]
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG"
    assert seg.SegmentSequence[0].SegmentLabel == "liver"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == g_d.volume.provenance.series_uid


@pytest.mark.gui
def test_folder_with_two_series_opens_as_two_layers(make_napari_viewer, tmp_path):
    import shutil

    from sam2_med.phantom import write_phantom

    study = tmp_path / "study"
    for seed in (0, 1):
        written = write_phantom(tmp_path / f"p{seed}", seed=seed)
        shutil.copytree(written["dicom"], study / f"series{seed}")
    viewer = make_napari_viewer()
    layers = viewer.open(str(study), plugin="sam2-med")
    assert len(layers) == 2
    uids = {geometry_of(lay.metadata).volume.provenance.series_uid for lay in layers}
    assert len(uids) == 2 and len({lay.name for lay in layers}) == 2
