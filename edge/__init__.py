"""overmap-edge, the device side: classify camera-trap frames and score how far each label can be
trusted with Over-MAP. Runs on numpy, OpenCV and ONNX Runtime; never imports torch."""

__version__ = "0.1.0"
