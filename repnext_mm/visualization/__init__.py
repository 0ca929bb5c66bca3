"""Visualization helpers: Grad-CAM maps (:mod:`.cam`) and latency-accuracy plots (:mod:`.latency_plot`).

The submodules are not imported here: each needs an optional dependency (``grad-cam`` or
``matplotlib``) that the rest of the package does not.
"""
