"""The `imp` method: lottery tickets found by `prunekit.training.imp.run_imp` on `ctx.data` (a DatasetSplits)."""

from __future__ import annotations

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.imp.config import ImpConfig
from prunekit.training.imp import run_imp


@register_method
class ImpMethod(Method):
    """Lottery tickets: iterative global magnitude pruning with rewinding, beside the random re-init control."""

    name = "imp"
    config_cls = ImpConfig

    def apply(self, model: nn.Module, config: ImpConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        if ctx.data is None:
            raise PrunekitError("method 'imp' trains the model: pass data= a DatasetSplits with train / val / test "
                                "(e.g. prunekit.data.load_dataset('digits'), or --data digits on the CLI)")
        res = run_imp(
            model, ctx.data, rounds=config.rounds, prune_per_round=config.prune_per_round, rewind=config.rewind,
            epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, weight_decay=config.weight_decay,
            seed=config.seed, control=config.control, targets=config.targets, ignore=config.ignore,
            protect_first=config.protect_first, protect_last=config.protect_last, min_density=config.min_density,
            distill=config.distill, order=ctx.execution_order, progress=ctx.progress,
            allocation=config.allocation, checkpoint_dir=config.checkpoint_dir, resume_dir=config.resume_dir,
        )
        result = StageResult(method=self.name)
        for name, reason in res.skipped.items():
            result.layers[name] = {"status": "skipped", "reason": reason}
        for name, sparsity in res.layer_sparsity.items():
            result.layers[name] = {"status": "pruned", "pattern": "unstructured", "sparsity": sparsity}
        if res.resumed_from is not None:
            result.notes.append(f"resumed from {res.resumed_from}; the earlier rounds' numbers come from it")
        for r in res.rounds:  # decisions never read test; the test column is reported for the final table
            ctl = "" if r.control_val_accuracy is None else (
                f", control val {r.control_val_accuracy:.4f} test {r.control_test_accuracy:.4f}")
            result.notes.append(f"round {r.round}: sparsity {r.sparsity:.4f}, ticket val {r.val_accuracy:.4f} "
                                f"test {r.test_accuracy:.4f}{ctl}")
        return result
