"""Pixels: DeepLesion 16-bit PNG, DICOM series (pydicom), patches, and the synthetic CT phantom
and cohort writer (:mod:`lesiondb.synth.generate`).

Import-light on purpose: submodules load numpy / pydicom only when they are imported.
"""
