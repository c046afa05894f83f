"""SparseGPT: OBS prune-and-update of each layer from its calibration Hessian, block by block."""
