"""Registered pruning methods. Importing this package registers every built-in method in `registry.METHODS`.

Adding a method: one folder here with `config.py` (a `Config` subclass) and `method.py` (a `Method` subclass
decorated with `@register_method`), plus one import line below; the conformance suite picks it up from the registry.
"""

from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.imp.method import ImpMethod  # noqa: F401  (registers "imp")
from prunekit.methods.gmp.method import GmpMethod  # noqa: F401  (registers "gmp")
from prunekit.methods.iterative.method import IterativeMethod  # noqa: F401  (registers "iterative")
from prunekit.methods.head_taylor.method import HeadTaylorMethod  # noqa: F401  (registers "head_taylor")
from prunekit.methods.finetune.method import FinetuneMethod  # noqa: F401  (registers "finetune")
from prunekit.methods.llm_depth.method import LlmDepthMethod  # noqa: F401  (registers "llm_depth")
from prunekit.methods.llm_width.method import LlmWidthMethod  # noqa: F401  (registers "llm_width")
from prunekit.methods.magnitude.method import MagnitudeMethod
from prunekit.methods.movement.method import MovementMethod  # noqa: F401  (registers "movement")
from prunekit.methods.random.method import RandomMethod
from prunekit.methods.sparsegpt.method import SparseGPTMethod  # noqa: F401  (registers "sparsegpt")
from prunekit.methods.structured.method import StructuredMethod  # noqa: F401  (registers "structured")
from prunekit.methods.wanda.method import WandaMethod  # noqa: F401  (registers "wanda")

__all__ = ["MagnitudeMethod", "Method", "PruneContext", "RandomMethod", "StageResult", "register_method"]
