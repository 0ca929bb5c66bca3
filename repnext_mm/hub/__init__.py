"""RepNeXt in other libraries' model registries, built from the package's one model definition.

:mod:`.timm_models` registers ``repnext_m0`` .. ``repnext_m5`` with timm (with the authors'
ImageNet weights as pretrained tags); ``import repnext_mm`` imports it when timm is installed.
:mod:`.weights` puts the authors' release addresses into MMEngine's checkpoint-loader registry
(``import repnext_mm`` registers them): downloaded once into torch hub's cache, converted.
This room sits above :mod:`repnext_mm.deploy`: the pretrained weights are read by its release
converter.
"""
