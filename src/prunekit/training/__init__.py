"""Training-aware pruning: the Pruner lifecycle for any loop, checkpoint / resume, lottery tickets (IMP),
distillation and BatchNorm recalibration."""

from prunekit.training.bn import recalibrate_batchnorm
from prunekit.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from prunekit.training.distill import DistillConfig, Distiller, distill_loss
from prunekit.training.imp import ImpResult, run_imp
from prunekit.training.pruner import Pruner
from prunekit.training.pruner_config import PrunerConfig

__all__ = [
    "DistillConfig",
    "Distiller",
    "ImpResult",
    "Pruner",
    "PrunerConfig",
    "distill_loss",
    "latest_checkpoint",
    "load_checkpoint",
    "recalibrate_batchnorm",
    "run_imp",
    "save_checkpoint",
]
