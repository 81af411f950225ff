"""FusionReID in multi-object trackers: the appearance encoder for boxmot (``tracking.boxmot_encoder``) and
exported ONNX / TorchScript files read back with the preprocessing their metadata describes
(``tracking.exported``). See docs/TRACKING.md and docs/EXPORT.md.

The submodules are imported explicitly; this package file imports nothing.
"""
