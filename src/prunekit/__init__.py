"""prunekit: prune PyTorch models and measure what the pruning really saved.

Public API (everything else is internal):
    prune(model, recipe, example_inputs=...) -> PruneReport   mask pruning from a recipe / config
    measure(model, example_inputs, evaluate=...) -> dict      latency, peak memory, file size, task metrics
    finalize(model)                                          bake masks into plain weights
    load(folder) -> nn.Module                                a model saved by `prunekit prune`, rebuilt (no pickle)
    load_recipe(path), parse_recipe(data)                    YAML recipes
    list_methods()                                           registered method names
"""

from prunekit._version import __version__
from prunekit.api import list_methods, measure, prune
from prunekit.errors import PrunekitError
from prunekit.masks import finalize
from prunekit.recipes import Recipe, load_recipe, parse_recipe
from prunekit.specs import load

__all__ = [
    "PrunekitError",
    "Recipe",
    "__version__",
    "finalize",
    "list_methods",
    "load",
    "load_recipe",
    "measure",
    "parse_recipe",
    "prune",
]
