"""Training-aware helpers: BatchNorm recalibration (more: schedules, Pruner lifecycle, distillation, to come)."""

from prunekit.training.bn import recalibrate_batchnorm

__all__ = ["recalibrate_batchnorm"]
