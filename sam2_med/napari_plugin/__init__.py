"""napari adapter for sam2-med: reader, writer, sample data and the segmentation dock widget.

npe2 imports the modules named in ``napari.yaml`` lazily, when a contribution is first used;
this package itself imports nothing from napari or Qt, so ``import sam2_med`` stays GUI-free.
"""
