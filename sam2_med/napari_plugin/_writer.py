"""npe2 writer: a Labels layer saved on the voxel grid of the image it was drawn on.

The writer never overwrites: an existing output makes :func:`sam2_med.io.save_mask` raise
``OutputExistsError``, which napari shows as an error (napari's own save dialog also asks
before choosing an existing name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._layers import LayerGeometry, geometry_of


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer as NIfTI (``.nii.gz``/``.nii``) or DICOM SEG (``.dcm``).

    Parameters
    ----------
    path : str
        Output file. ``.dcm`` writes a DICOM Segmentation and needs a DICOM source image.
    data : (X, Y, Z) array_like of int
        The layer data, in layer data order.
    meta : dict
        The layer's attributes (napari passes ``layer.as_layer_data_tuple()[1]``). When
        ``meta["metadata"]["sam2_med"]`` holds a :class:`LayerGeometry` (layers made by the
        sam2-med reader or widget), the mask is written on that volume's grid, with its header;
        otherwise on the grid the layer's own transform describes. A layer the widget
        segmented also keeps the session's run record there (``metadata["sam2_med_run"]``):
        the sidecar carries it, interaction log included, as the widget's export writes it.

    Returns
    -------
    list of str
        Every file written (the mask and its JSON sidecar).

    Raises
    ------
    sam2_med.io.MaskWriteError
        Existing output, wrong suffix, mask not matching the image, DICOM SEG without a DICOM
        source.
    """
    from ..io import MaskWriteError, save_dicom_seg, save_mask
    from ..io.writers import sidecar_path

    geo = geometry_of(meta.get("metadata"))
    if geo is None:
        geo = _geometry_from_transform(np.shape(data), meta)
    labels = np.ascontiguousarray(geo.from_data(np.asarray(data)))
    names = meta.get("metadata", {}).get("sam2_med_label_names")
    out = Path(path)
    if out.name.lower().endswith(".dcm"):
        if geo.volume.provenance.format != "dicom":
            raise MaskWriteError(
                "DICOM SEG needs an image read from DICOM; save as .nii.gz instead", out
            )
        written = save_dicom_seg(labels, out, reference=geo.volume, label_names=names)
        return [str(written)]
    from ..labels import LabelVolume
    from ._layers import stored_run_record

    # a layer the widget segmented carries the session's run record (interaction log): the
    # sidecar gets it, as the widget's export writes it
    extra = stored_run_record(meta.get("metadata"), labels)
    if extra:
        labels = LabelVolume(labels, geo.volume, names=dict(names or {}), extra=extra)
    written = save_mask(labels, out, reference=geo.volume, label_names=names)
    files = [str(written)]
    side = sidecar_path(Path(written))
    if side.exists():
        files.append(str(side))
    return files


def _geometry_from_transform(shape: tuple[int, ...], meta: dict[str, Any]) -> LayerGeometry:
    """A reference grid for a Labels layer sam2-med did not make: the layer's own transform.

    napari maps data to world as ``affine @ translate @ rotate @ shear @ scale``; with sam2-med's
    world convention (RAS mm, axes x, y, z) that product is the voxel -> RAS affine.
    """
    from napari.utils.transforms import Affine

    from ..volume import Provenance, Volume

    if len(shape) != 3:
        from ..io import MaskWriteError

        raise MaskWriteError(f"only 3D label layers can be saved as masks, got shape {shape}")
    ndim = 3
    physical = Affine(
        scale=meta.get("scale", (1.0,) * ndim),
        translate=meta.get("translate", (0.0,) * ndim),
        rotate=meta.get("rotate"),
        shear=meta.get("shear"),
        ndim=ndim,
    )
    extra = meta.get("affine")
    extra_matrix = getattr(extra, "affine_matrix", extra)
    matrix = physical.affine_matrix
    if extra_matrix is not None:
        matrix = np.asarray(extra_matrix, dtype=np.float64) @ matrix
    reference = Volume(
        np.broadcast_to(np.zeros((), dtype=np.uint8), shape),
        matrix,
        provenance=Provenance(format="napari", description=str(meta.get("name", ""))),
    )
    return LayerGeometry(volume=reference, axes=(0, 1, 2))
