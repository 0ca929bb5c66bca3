"""Inference on the user's own images: one call for the three libraries' Inferencers.

The top room below the command line: it names models through the zoo
(:mod:`repnext_mm.zoo.model_index`), checks configs and loads weights through
:mod:`repnext_mm.apis`, and runs mmdet's ``DetInferencer``, mmseg's ``MMSegInferencer`` or
mmpretrain's ``ImageClassificationInferencer`` (the config's ``default_scope`` decides).

* :mod:`.images`: the images of a file or folder, the output folder, publishing the outputs;
* :mod:`.infer`: model and weights resolution, the Inferencers, :func:`~.infer.infer`
  (what ``tools/infer.py`` calls).

Its submodules are imported where used.
"""
