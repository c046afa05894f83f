"""prunekit.data: offline datasets with fixed splits, and the small models prunekit trains itself (cached).

Datasets: `load_dataset(name)` for "digits", "mnist1d", "shakespeare", "shakespeare-genre" (see `list_datasets()`),
each with fixed train / val / test splits. Models: `digits_cnn()`, `mnist1d_cnn()`, `tiny_llama()` train once on
first use and are cached under `cache_root()` (`$PRUNEKIT_CACHE_DIR` overrides); `minilm_path()` is the pretrained
all-MiniLM-L6-v2 shipped as a pip package. `python -m prunekit.data` builds every artefact and prints its metrics.
"""

from __future__ import annotations

from prunekit.data.cache import CacheWarning, cache_root
from prunekit.data.datasets import example_inputs, list_datasets, load_dataset
from prunekit.data.loops import evaluate_classifier, train_classifier
from prunekit.data.minilm import mean_pool, minilm_path
from prunekit.data.models import (
    DIGITS_RECIPE,
    MNIST1D_RECIPE,
    TINY_LLAMA_RECIPE,
    ClassifierRecipe,
    LlamaRecipe,
    SmallResNet,
    digits_cnn,
    mnist1d_cnn,
    tiny_llama,
    tiny_llama_path,
)
from prunekit.data.perplexity import bigram_perplexity, perplexity, unigram_perplexity
from prunekit.data.splits import DatasetInfo, DatasetSplits, LabeledTextDataset, TextDataset

__all__ = [
    "DIGITS_RECIPE", "MNIST1D_RECIPE", "TINY_LLAMA_RECIPE", "CacheWarning", "ClassifierRecipe", "DatasetInfo",
    "DatasetSplits", "LabeledTextDataset", "LlamaRecipe", "SmallResNet", "TextDataset", "bigram_perplexity",
    "cache_root", "digits_cnn", "evaluate_classifier", "example_inputs", "list_datasets", "load_dataset",
    "mean_pool", "minilm_path", "mnist1d_cnn", "perplexity", "tiny_llama", "tiny_llama_path", "train_classifier",
    "unigram_perplexity",
]
