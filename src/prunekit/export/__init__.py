"""Export: finalize masks into plain weights and write output folders atomically."""

from prunekit.export.files import atomic_write_bytes, atomic_write_text, output_dir, save_weights
from prunekit.masks import finalize

__all__ = ["atomic_write_bytes", "atomic_write_text", "finalize", "output_dir", "save_weights"]
