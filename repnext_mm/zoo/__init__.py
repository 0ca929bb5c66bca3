"""The model zoo: what is published about each config (``model-index.yml``, the metafiles).

The top room of the package: :mod:`.metafiles` builds every config's model, counts it
(:mod:`repnext_mm.models.utils.complexity`) and adds the paper's figures (:mod:`repnext_mm.paper`).
:mod:`.model_index` reads the index back: zoo names -> config files of the installed package,
and the classifiers registered with mmpretrain's model hub (``import repnext_mm`` does it).
Its submodules are imported where used (``tools/misc/gen_metafiles.py``, the package root).
"""
