"""Compressed storage: sparse (and quantized) weights in one safetensors file, in a documented format.

Per tensor the smallest of: dense, a packed bitmask + the non-zero values (any sparsity), or packed N:M (values +
ceil(log2 M)-bit indices per group, for 2:4 / 4:8), each with fp32 / fp16 / INT8 / INT4 values (+ fp32 scales).
`save_compressed(model, path, values=..., group_size=..., encodings=...)` writes atomically;
`load_compressed(path, model)` restores exactly; `describe(path)` gives per-tensor theoretical vs stored bytes.
The format is specified in docs/storage.md.
"""

from prunekit.export.storage.codec import VALUE_BITS, decode_matrix, encode_matrix
from prunekit.export.storage.describe import StorageDescription, TensorRow, describe
from prunekit.export.storage.io import (
    FORMAT_NAME,
    FORMAT_VERSION,
    build_file,
    load_compressed,
    read_compressed,
    save_compressed,
)

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "StorageDescription", "TensorRow", "VALUE_BITS", "build_file", "decode_matrix",
    "describe", "encode_matrix", "load_compressed", "read_compressed", "save_compressed",
]
