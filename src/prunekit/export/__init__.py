"""Export: finalize masks into plain weights and write output folders atomically."""

from prunekit.export.files import atomic_write_bytes, atomic_write_text, output_dir, save_weights
from prunekit.export.storage import describe, load_compressed, save_compressed
from prunekit.masks import finalize

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "describe",
    "finalize",
    "load_compressed",
    "output_dir",
    "save_compressed",
    "save_weights",
]
