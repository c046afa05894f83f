"""Weight-only quantization: pure INT8 / INT4 maths (symmetric, per-channel or group-wise) and QuantLinear.

`quantize(matrix, bits, group_size) -> (codes, scales)`, `dequantize(codes, scales)`, `pack_int4` / `unpack_int4`
are pure tensor functions; `quantize_model(model, bits, group_size, targets)` swaps Linear layers for `QuantLinear`
(codes + scales as buffers, dequantized in forward). Compressed storage (`prunekit.export.storage`) uses the same
maths, so a stored INT8 / INT4 weight loads back to exactly `dequantize(quantize(w))`.
"""

from prunekit.quant.linear import QuantLinear, quantize_model
from prunekit.quant.maths import (
    QMAX,
    check_bits,
    check_group_size,
    dequantize,
    fake_quantize,
    pack_int4,
    quantize,
    unpack_int4,
)

__all__ = [
    "QMAX", "QuantLinear", "check_bits", "check_group_size", "dequantize", "fake_quantize", "pack_int4",
    "quantize", "quantize_model", "unpack_int4",
]
