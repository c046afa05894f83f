"""The two small classifiers prunekit trains itself and caches: `digits_cnn` (8x8 digits) and `mnist1d_cnn`.

Both are `SmallResNet`s (see cnn.py). On first use with `pretrained=True` the model is trained with its recipe on the
dataset's fixed train split, evaluated on val and the held-out test split, and cached (safetensors + manifest with
the recipe, split, versions and metrics); later calls load the verified weights. Rebuild the default artefacts with
`python -m prunekit.data digits_cnn mnist1d_cnn`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.data.datasets import load_dataset
from prunekit.data.loops import evaluate_classifier, train_classifier
from prunekit.data.models._pretrained import check_recipe, ensure_artefact
from prunekit.data.models.cnn import SmallResNet

WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ClassifierRecipe:
    """Everything that determines a trained classifier: dataset, architecture, optimisation and seed."""

    dataset: str
    dims: int
    in_channels: int
    num_classes: int
    widths: tuple[int, ...]
    blocks: int
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    label_smoothing: float
    augment: str
    seed: int


DIGITS_RECIPE = ClassifierRecipe(dataset="digits", dims=2, in_channels=1, num_classes=10, widths=(16, 32), blocks=2,
                                 epochs=40, lr=4e-3, batch_size=64, weight_decay=5e-4, label_smoothing=0.05,
                                 augment="random-shift", seed=0)
MNIST1D_RECIPE = ClassifierRecipe(dataset="mnist1d", dims=1, in_channels=1, num_classes=10, widths=(32, 64, 96),
                                  blocks=2, epochs=60, lr=4e-3, batch_size=64, weight_decay=5e-4, label_smoothing=0.05,
                                  augment="none", seed=0)


def build_classifier(recipe: ClassifierRecipe) -> SmallResNet:
    """A freshly initialised model with the recipe's architecture (initialisation uses torch's global RNG)."""
    return SmallResNet(recipe.dims, recipe.in_channels, recipe.num_classes, recipe.widths, recipe.blocks)


def digits_cnn(pretrained: bool = True, progress: bool = True, *, recipe: ClassifierRecipe | None = None) -> nn.Module:
    """Residual CNN for the 8x8 `digits` dataset (input (B, 1, 8, 8) in [0, 1], 10 logits), about 42k parameters.

    Args:
        pretrained: Load (training and caching on first use) the weights of `recipe`; False gives a fresh model.
        progress: Show a progress bar while training.
        recipe: Training recipe; default `DIGITS_RECIPE`. Other recipes are cached under their own name.
    """
    return _classifier("digits_cnn", recipe or DIGITS_RECIPE, DIGITS_RECIPE, pretrained, progress)


def mnist1d_cnn(pretrained: bool = True, progress: bool = True, *, recipe: ClassifierRecipe | None = None) -> nn.Module:
    """Residual 1-D CNN for `mnist1d` (input (B, 1, 40), 10 logits).

    Args:
        pretrained: Load (training and caching on first use) the weights of `recipe`; False gives a fresh model.
        progress: Show a progress bar while training.
        recipe: Training recipe; default `MNIST1D_RECIPE`. Other recipes are cached under their own name.
    """
    return _classifier("mnist1d_cnn", recipe or MNIST1D_RECIPE, MNIST1D_RECIPE, pretrained, progress)


def classifier_path(key: str, recipe: ClassifierRecipe, default: ClassifierRecipe, progress: bool = True) -> Path:
    """The cached folder of a trained classifier (trained on first use)."""
    check_recipe(recipe, ClassifierRecipe)
    return ensure_artefact(key, recipe, default, lambda tmp: _train_into(tmp, recipe, progress))


def _classifier(key: str, recipe: ClassifierRecipe, default: ClassifierRecipe, pretrained: bool,
                progress: bool) -> nn.Module:
    check_recipe(recipe, ClassifierRecipe)
    model = build_classifier(recipe)
    if pretrained:
        from safetensors.torch import load_file

        folder = classifier_path(key, recipe, default, progress)
        model.load_state_dict(load_file(folder / WEIGHTS))
    return model.eval()


def _train_into(folder: Path, recipe: ClassifierRecipe, progress: bool) -> dict[str, Any]:
    from safetensors.torch import save_file

    splits = load_dataset(recipe.dataset)
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(recipe.seed)
        model = build_classifier(recipe)
    start, cpu_start = time.perf_counter(), time.process_time()
    history = train_classifier(model, splits.train, epochs=recipe.epochs, lr=recipe.lr,
                               batch_size=recipe.batch_size, seed=recipe.seed, progress=progress,
                               weight_decay=recipe.weight_decay, label_smoothing=recipe.label_smoothing,
                               augment=recipe.augment)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    metrics = {"train_accuracy": evaluate_classifier(model, splits.train),
               "val_accuracy": evaluate_classifier(model, splits.val),
               "test_accuracy": evaluate_classifier(model, splits.test),
               "final_train_loss": history[-1]}
    data = {"dataset": recipe.dataset, "split": splits.info.split, "split_sizes": splits.info.split_sizes}
    return {"data": data, "metrics": metrics, "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2),
            "torch_threads": torch.get_num_threads()}
