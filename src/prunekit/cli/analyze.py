"""`prunekit analyze`: per-layer sensitivity curves and the per-layer sparsity allocations they imply.

    prunekit analyze --model prunekit.data:digits_cnn --data digits --target 0.9 --out runs/analyze

writes DIR/sensitivity.json (the curves; usable as `allocation: {kind: sensitivity, file: ...}`), sensitivity.md
(the curves table and uniform / ERK / LAMP / sensitivity allocations side by side), sensitivity.png (one curve per
layer) and allocation.json (the sensitivity allocation at --target, the comparison, and the curves embedded, so it
also works as `file`). The metric is measured on the validation split: accuracy for classifiers, perplexity of a
fixed slice of the validation plays for causal LMs on `shakespeare`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prunekit.errors import PrunekitError

LM_VAL_CHARS = 20_000  # a fixed slice of the validation plays keeps an LM analysis affordable


def add_parser(sub: Any) -> None:
    """Register the `analyze` sub-command on the CLI's sub-parsers."""
    p = sub.add_parser("analyze", help="prune each layer alone at several sparsities, measure the validation "
                       "metric, and turn the curves into per-layer sparsities for a global target")
    p.add_argument("--model", required=True, help="HF folder, 'timm:NAME' or 'module:function'")
    p.add_argument("--data", required=True, help="built-in dataset (digits, mnist1d, shakespeare) or module:function")
    p.add_argument("--checkpoint", help="weights to load into the model (.safetensors or a weights-only torch file)")
    p.add_argument("--sparsities", nargs="+", type=float, metavar="S",
                   help="grid of sparsities in (0, 1) (default 0.5 0.7 0.8 0.9 0.95 0.98)")
    p.add_argument("--target", type=float, default=0.9,
                   help="global sparsity of the default-targeted layers for allocation.json (default 0.9)")
    p.add_argument("--out", default="prunekit-analyze", help="output folder (default prunekit-analyze; the four "
                   "files in it are replaced)")


def _evaluator(loaded: Any, data: Any) -> tuple[Any, str, bool]:
    """(model -> metric on the validation split, metric name, higher is better)."""
    info = getattr(data, "info", None)
    val = getattr(data, "val", None)
    if info is not None and val is not None and info.task.endswith("classification") and info.input_shape:
        from prunekit.data import evaluate_classifier

        return (lambda m: evaluate_classifier(m, val)), "accuracy", True
    if (info is not None and info.name == "shakespeare" and loaded.tokenizer is not None
            and hasattr(loaded.model, "generation_config")):
        from prunekit.data import perplexity

        text = val.text[:LM_VAL_CHARS] if hasattr(val, "text") else "\n".join(val.texts)[:LM_VAL_CHARS]
        return (lambda m: perplexity(m, loaded.tokenizer, text, seq_len=256, stride=256)), "perplexity", False
    name = getattr(info, "name", type(data).__name__)
    raise PrunekitError(f"analyze cannot score data {name!r}: it needs a classification dataset with a validation "
                        "split (digits, mnist1d, or a module:function returning DatasetSplits) or shakespeare with "
                        "a causal LM")


def _targeted_layers(model: Any, inputs: Any) -> list[str]:
    """The layers a default gmp / imp stage prunes (first and last layer protected)."""
    from prunekit.config.targets import select_targets
    from prunekit.layers import execution_order
    from prunekit.methods.mask_pipeline import protected_layers
    from prunekit.methods.base import PruneContext
    from prunekit.methods.magnitude.config import MagnitudeConfig

    order = execution_order(model, inputs) if inputs is not None else None
    guards = protected_layers(model, MagnitudeConfig(sparsity=0.5), PruneContext(execution_order=order))
    return list(select_targets(model, None, (), protected=guards).targeted)


def cmd_analyze(args: argparse.Namespace) -> int:
    from rich.console import Console

    from prunekit._atomic import atomic_write_text
    from prunekit.eval.sensitivity import (
        DEFAULT_SPARSITIES,
        SensitivityResult,
        allocation_table,
        analyze_sensitivity,
        check_grid,
        compare_allocations,
    )
    from prunekit.specs import data_example_inputs, load_data, load_model

    grid = check_grid(args.sparsities if args.sparsities is not None else DEFAULT_SPARSITIES)
    if not 0.0 < args.target < 1.0:
        raise PrunekitError(f"--target {args.target:g} must be in (0, 1)")
    if args.target > grid[-1]:
        raise PrunekitError(f"--target {args.target:g} is above the largest --sparsities value {grid[-1]:g}; "
                            "add a higher sparsity to the grid")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PrunekitError(f"--out {args.out!r} exists and is not a folder")
    loaded = load_model(args.model, args.checkpoint)
    data = load_data(args.data)
    evaluate, metric, higher = _evaluator(loaded, data)
    con = Console(highlight=False)
    model = loaded.model
    model.eval()
    con.print(f"analysing {args.model} on {args.data} ({metric}, validation split, grid "
              f"{', '.join(f'{s:g}' for s in grid)})")
    result: SensitivityResult = analyze_sensitivity(model, evaluate, sparsities=grid, metric=metric,
                                                    higher_is_better=higher, progress=True)
    result.model, result.data = args.model, args.data
    inputs = data_example_inputs(loaded, data)
    inputs = inputs if inputs is not None else loaded.example_inputs
    layers = [n for n in _targeted_layers(model, inputs) if n in result.curves.layers]
    out.mkdir(parents=True, exist_ok=True)
    sens_path = out / "sensitivity.json"
    result.to_json(sens_path)
    max_sparsity = 1.0 - 0.02  # the default min_density of gmp / imp
    alloc = compare_allocations(model, layers, args.target, sens_path, max_sparsity=max_sparsity)
    allocation = {
        "format": "prunekit-allocation", "version": 1, "target": args.target, "layers": layers,
        "allocation": {"kind": "sensitivity", "file": str(sens_path)},
        "sparsities": alloc["sensitivity"], "comparison": alloc, "sensitivity": result.to_dict(),
    }
    atomic_write_text(out / "allocation.json", json.dumps(allocation, indent=1) + "\n")
    md = [f"# Sensitivity of {args.model} on {args.data}", "", result.table(),
          f"## Allocations at {100 * args.target:g}% over the default-targeted layers", "",
          allocation_table(alloc, result.curves.params), "",
          f"Use it in a gmp / imp stage: `allocation: {{kind: sensitivity, file: {sens_path}}}`.",
          f"Measured in {result.seconds:.1f} s.", ""]
    atomic_write_text(out / "sensitivity.md", "\n".join(md))
    result.plot(out / "sensitivity.png", title=f"Sensitivity of {args.model} ({args.data}, validation)")
    con.print(allocation_table(alloc, result.curves.params), markup=False)
    con.print(f"[bold]wrote[/bold] {out}/sensitivity.json, sensitivity.md, sensitivity.png, allocation.json")
    return 0
