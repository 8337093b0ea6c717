"""npe2 sample data: the synthetic CT phantom, placed in world millimetres like a real file."""

from __future__ import annotations

from ._layers import METADATA_KEY, LayerGeometry, image_layer_data


def phantom() -> list[tuple]:
    """The sam2-med phantom as an Image layer plus its reference labels (hidden).

    Returns
    -------
    list of LayerDataTuple
        ``(image, kwargs, "image")`` carrying the phantom :class:`~sam2_med.Volume` in its
        metadata, and ``(labels, kwargs, "labels")``: the phantom's true structures on the same
        grid, hidden, for comparing a segmentation against.
    """
    from ..phantom import make_phantom

    volume, truth = make_phantom()
    image = image_layer_data(volume, name="phantom")
    geo: LayerGeometry = image[1]["metadata"][METADATA_KEY]
    labels_kwargs = {
        "name": "phantom reference",
        "affine": image[1]["affine"],
        "metadata": {METADATA_KEY: geo, "sam2_med_label_names": dict(truth.names)},
        "visible": False,
        "opacity": 0.4,
        "units": ("mm", "mm", "mm"),
    }
    from ._reader import show_radiologically_when_added

    show_radiologically_when_added([geo])
    return [image, (geo.to_data(truth.array), labels_kwargs, "labels")]
