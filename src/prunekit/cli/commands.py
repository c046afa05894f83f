"""The sub-commands behind `prunekit ...`: prune, report, validate, list (and demo, in demo.py).

Each command validates everything it can (recipe, output folder, files) before any heavy work, so a user mistake
costs no time and writes nothing.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prunekit.api import measure, prune
from prunekit.errors import PrunekitError
from prunekit.eval import PruneReport
from prunekit.export import atomic_write_text, finalize, output_dir, save_weights
from prunekit.export.files import check_output_dir
from prunekit.methods.structured import get_plan
from prunekit.recipes import load_recipe
from prunekit.registry import ALL_REGISTRIES
from prunekit.specs import data_example_inputs, load_data, load_model, parse_shape


def _console() -> Console:
    return Console(highlight=False)


def cmd_validate(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    con = _console()
    con.print(f"[green]ok[/green]: {args.recipe}: {len(recipe.stages)} stage(s); resolved recipe:")
    con.print(recipe.to_yaml().rstrip(), markup=False)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from prunekit.data import list_datasets

    con = _console()
    for reg in ALL_REGISTRIES:
        table = Table(title=f"{reg.kind}s", title_justify="left", show_header=False)
        for entry in reg.entries():
            table.add_row(entry.name, entry.help)
        if len(reg) == 0:
            table.add_row("(none yet)", "")
        con.print(table)
    table = Table(title="datasets (--data)", title_justify="left", show_header=False)
    for name, help_text in list_datasets().items():
        table.add_row(name, help_text)
    con.print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not (folder / "report.json").is_file():
        raise PrunekitError(f"{str(folder)!r} has no report.json (give a folder written by 'prunekit prune')")
    PruneReport.load(folder).print(_console())
    return 0


def _task_evaluator(loaded: Any, data: Any) -> Any:
    """model -> {metric: value} on the held-out test split, for the data kinds prunekit knows how to score."""
    info = getattr(data, "info", None)
    if info is None:
        return None
    if info.task.endswith("classification") and info.num_classes and info.input_shape:
        from prunekit.data import evaluate_classifier

        return lambda m: {"accuracy": evaluate_classifier(m, data.test)}
    if info.name == "shakespeare" and loaded.tokenizer is not None and hasattr(loaded.model, "generation_config"):
        from prunekit.data import perplexity

        text = data.test.text[:60_000]  # a fixed slice of the unseen plays keeps the CLI quick
        return lambda m: {"perplexity": perplexity(m, loaded.tokenizer, text, seq_len=256, stride=256)}
    return None


def cmd_prune(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)  # validate first: a bad recipe costs nothing
    check_output_dir(args.out, args.overwrite)
    loaded = load_model(args.model, args.checkpoint)
    data = load_data(args.data) if args.data else None
    inputs = data_example_inputs(loaded, data) if data is not None else None
    if args.input_shape:
        import torch

        inputs = torch.randn(*parse_shape(args.input_shape), generator=torch.Generator().manual_seed(0))
    inputs = inputs if inputs is not None else loaded.example_inputs
    model = loaded.model
    dense = copy.deepcopy(model) if not args.no_measure else None
    con = _console()
    con.print(f"pruning {args.model} with {args.recipe} ({len(recipe.stages)} stage(s))")
    report = prune(model, recipe, inputs, model_spec=args.model, progress=True)
    finalize(model)
    if dense is not None and inputs is not None:
        con.print("measuring dense vs pruned (latency, memory, file size, task metric)...")
        measure(report, dense, model, inputs, evaluate=_task_evaluator(loaded, data))
    plan = get_plan(model)
    with output_dir(args.out, args.overwrite) as tmp:
        save_weights(model, tmp)
        if plan is not None:  # structured stages changed shapes: the plan rebuilds the model from its base
            atomic_write_text(tmp / "plan.json", plan.to_json())
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(str(tmp))
        atomic_write_text(tmp / "recipe.yaml", recipe.to_yaml())
        report.save(tmp)
    report.print(con)
    if plan is not None:
        con.print("plan.json replays the structured pruning on the base model (prunekit.methods.structured.apply_plan)")
        for stage in report.stages:
            for note in stage.get("notes", []):
                con.print(f"  {stage['method']}: {note}", markup=False)
    con.print(f"[bold]wrote[/bold] {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from prunekit.cli.demo import run_demo

    return run_demo(out=args.out, quick=args.quick, overwrite=args.overwrite, threads=args.threads)
