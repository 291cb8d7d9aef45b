"""overmap-edge, the workstation side: PyTorch classifier + segmenter -> a quantized bundle whose
classifier graph also returns its Grad-CAM map. Needs the `export` extra (torch)."""
