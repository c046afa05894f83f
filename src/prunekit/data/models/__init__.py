"""The small models prunekit trains itself and caches: two residual CNN classifiers and a tiny Llama."""

from __future__ import annotations

from prunekit.data.models.classifiers import (
    DIGITS_RECIPE,
    MNIST1D_RECIPE,
    ClassifierRecipe,
    build_classifier,
    digits_cnn,
    mnist1d_cnn,
)
from prunekit.data.models.cnn import BasicBlock, SmallResNet
from prunekit.data.models.llama import TINY_LLAMA_RECIPE, LlamaRecipe, build_tiny_llama, tiny_llama, tiny_llama_path

__all__ = [
    "DIGITS_RECIPE", "MNIST1D_RECIPE", "TINY_LLAMA_RECIPE", "BasicBlock", "ClassifierRecipe", "LlamaRecipe",
    "SmallResNet", "build_classifier", "build_tiny_llama", "digits_cnn", "mnist1d_cnn", "tiny_llama",
    "tiny_llama_path",
]
