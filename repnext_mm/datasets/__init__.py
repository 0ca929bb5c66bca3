"""Data sets made by this package: the synthetic "shapes" set for CPU demos and tests.

* :mod:`~repnext_mm.datasets.shapes`: classes, shape polygons, rendered scenes.
* :mod:`~repnext_mm.datasets.coco_encoding`: their COCO instance annotations (polygons, RLE).
* :mod:`~repnext_mm.datasets.make_shapes`: the data set in COCO, ADE20K and ImageNet layouts
  (command line: ``tools/data/make_shapes.py``).

Nothing is imported here, so that ``import repnext_mm`` does not need OpenCV or pycocotools.
"""
