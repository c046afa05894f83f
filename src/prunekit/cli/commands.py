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
from prunekit.cli.analyze import cmd_analyze  # noqa: F401  (`prunekit analyze`; main dispatches by name)
from prunekit.errors import PrunekitError
from prunekit.eval import PruneReport
from prunekit.export import atomic_write_text, finalize, output_dir, save_weights
from prunekit.export.files import check_output_dir
from prunekit.methods.structured import get_plan
from prunekit.recipes import load_recipe
from prunekit.registry import ALL_REGISTRIES
from prunekit.specs import data_example_inputs, load_data, load_model, parse_shape, read_plan


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


def _read_bench(path: Path) -> Any:
    """The BenchResult saved in `path` (bench.json of 'prunekit bench' or 'prunekit demo'); one-line errors."""
    import json

    from prunekit.eval.bench import BenchResult

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrunekitError(f"{path}: not a readable bench.json ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise PrunekitError(f"{path}: not a bench result (a JSON object was expected, got {type(data).__name__})")
    try:
        return BenchResult.from_dict(data)
    except (TypeError, KeyError) as exc:
        raise PrunekitError(f"{path}: corrupt bench result ({exc})") from None


def cmd_report(args: argparse.Namespace) -> int:
    """Print DIR's report.json; when DIR also has a bench.json, its table and the advice made from its numbers."""
    folder = Path(args.dir)
    has_report, bench_file = (folder / "report.json").is_file(), folder / "bench.json"
    if not has_report and not bench_file.is_file():
        raise PrunekitError(f"{str(folder)!r} has no report.json or bench.json (give a folder written by 'prunekit "
                            f"prune', 'prunekit bench' or 'prunekit demo')")
    bench = _read_bench(bench_file) if bench_file.is_file() else None  # a corrupt file fails before any output
    con = _console()
    if has_report:
        report = PruneReport.load(folder)
        plan_file = folder / "plan.json"  # structured: per-group channel / head counts come from the plan
        plan = read_plan(plan_file).to_dict() if plan_file.is_file() else None
        report.print(con, plan=plan)
    if bench is not None:
        con.print(f"[bold]bench[/bold] ({bench_file}): measured side by side; the advice follows these numbers")
        bench.print()  # its own wide console: 10+ columns
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


RESUME_EVERY = 50  # optimizer steps between checkpoints when --resume is given and the recipe sets none


def _with_resume(recipe: Any, folder: str) -> Any:
    """The recipe with every training stage (one with a `resume_dir` field) checkpointing into (and resuming from)
    FOLDER/stage-<i>.

    Raises:
        PrunekitError: no stage of the recipe trains (nothing could be resumed).
    """
    from dataclasses import replace

    stages, hit = [], 0
    for i, st in enumerate(recipe.stages):
        fields = type(st.config).model_fields
        if "resume_dir" in fields:  # gmp, finetune (every N optimizer steps), iterative (after every step)
            update: dict[str, Any] = {"resume_dir": str(Path(folder) / f"stage-{i}")}
            if "checkpoint_every" in fields:
                update["checkpoint_every"] = getattr(st.config, "checkpoint_every", None) or RESUME_EVERY
            st = replace(st, config=st.config.model_copy(update=update))
            hit += 1
        stages.append(st)
    if not hit:
        names = ", ".join(st.method for st in recipe.stages)
        raise PrunekitError(f"--resume {folder}: no stage of this recipe trains ({names}); only training stages "
                            "such as gmp, finetune, iterative checkpoint and resume")
    return replace(recipe, stages=tuple(stages))


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune, measure and write the output folder. Under `torchrun` every rank loads, prunes and trains (the
    training stages are data-parallel); rank 0 alone measures and writes (report, weights, plan, the atomic
    temp-folder rename), the other ranks end with exit code 0 having written nothing."""
    from prunekit.training import distributed

    recipe = load_recipe(args.recipe)  # validate first: a bad recipe costs nothing
    if getattr(args, "resume", None):
        recipe = _with_resume(recipe, args.resume)
    distributed.join_from_env()  # torchrun: WORLD_SIZE > 1
    check_output_dir(args.out, args.overwrite)
    distributed.barrier()  # every rank checked the folder before rank 0 can create it
    main_rank = distributed.is_main()
    loaded = load_model(args.model, args.checkpoint)
    data = load_data(args.data) if args.data else None
    inputs = data_example_inputs(loaded, data) if data is not None else None
    if args.input_shape:
        import torch

        inputs = torch.randn(*parse_shape(args.input_shape), generator=torch.Generator().manual_seed(0))
    inputs = inputs if inputs is not None else loaded.example_inputs
    model = loaded.model
    dense = copy.deepcopy(model) if not args.no_measure and main_rank else None
    con = _console()
    if main_rank:
        con.print(f"pruning {args.model} with {args.recipe} ({len(recipe.stages)} stage(s))")
    report = prune(model, recipe, inputs, model_spec=args.model, progress=main_rank, data=data)
    finalize(model)
    if not main_rank:
        return 0  # rank 0 holds the same model (masks and weights are synchronised) and writes it
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
    for stage in report.stages:
        if "seconds" in stage:
            con.print(f"  {stage['method']}: {stage['seconds']:.1f} s; process peak memory so far "
                      f"{stage['peak_rss_mib']:.0f} MiB", markup=False)
        nm = [n for n in stage.get("notes", []) if n.startswith("N:M check")]
        if nm and plan is None:
            con.print(f"  {stage['method']}: {nm[0]}", markup=False)
    con.print(f"[bold]wrote[/bold] {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from prunekit.cli.demo import run_demo

    return run_demo(out=args.out, quick=args.quick, overwrite=args.overwrite, threads=args.threads)


def _bench_inputs(loaded: Any, data: Any, args: argparse.Namespace) -> Any:
    """Example inputs for bench / export: --input-shape, else a test batch of --data, else the model's own."""
    import torch

    if args.input_shape:
        return torch.randn(*parse_shape(args.input_shape), generator=torch.Generator().manual_seed(0))
    batch = getattr(args, "batch_size", 4)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PrunekitError(f"--batch-size must be an integer >= 1, got {batch!r}")
    inputs = data_example_inputs(loaded, data, batch_size=batch) if data is not None else None
    inputs = inputs if inputs is not None else loaded.example_inputs
    if inputs is None:
        raise PrunekitError(f"no example inputs for {args.dir!r}: give --data or --input-shape (e.g. 4,1,8,8)")
    return inputs


def _bench_weight_files(folder: Path) -> list[Path] | None:
    """The safetensors weight files of a model folder (their size is the variant's file size), None if none."""
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return files or None


def _bench_baseline(args: argparse.Namespace, folder: Path) -> tuple[Any, list[Path] | None, str]:
    """(loaded dense model, its weight files, where it came from)."""
    from prunekit.specs import load_pruned

    if args.baseline:
        path = Path(args.baseline)
        if path.is_dir() and (path / "report.json").is_file():
            return load_pruned(path), _bench_weight_files(path), f"--baseline {args.baseline} (a pruned folder)"
        return load_model(args.baseline), _bench_weight_files(path), f"--baseline {args.baseline}"
    spec = PruneReport.load(folder).model_spec
    if not isinstance(spec, str) or not spec:
        raise PrunekitError(f"{str(folder)!r}: no base model spec in report.json; pass --baseline (a model spec "
                            f"or a 'prunekit prune' folder)")
    return load_model(spec), _bench_weight_files(Path(spec)), f"{spec} (recorded in report.json)"


def cmd_bench(args: argparse.Namespace) -> int:
    from prunekit.eval.bench import Variant, bench
    from prunekit.export.quantize_dynamic import quantize_dynamic_int8
    from prunekit.specs import load_pruned

    folder = Path(args.dir)
    if not (folder / "report.json").is_file():
        raise PrunekitError(f"{str(folder)!r} has no report.json (give a folder written by 'prunekit prune')")
    for name in ("threads", "runs"):
        value = getattr(args, name)
        if value < 1:
            raise PrunekitError(f"--{name} must be >= 1, got {value}")
    out = Path(args.out) if args.out else folder
    if out.exists() and not out.is_dir():
        raise PrunekitError(f"--out {str(out)!r} is a file; give a folder")
    data = load_data(args.data) if args.data else None
    pruned = load_pruned(folder)
    base, base_files, base_from = _bench_baseline(args, folder)
    inputs = _bench_inputs(pruned, data, args)
    con = _console()
    con.print(f"baseline: {base_from}; pruned: {folder} ({pruned.rebuilt})", markup=False)
    variants = {"dense": Variant(base.model, base_files, f"the baseline: {base_from}"),
                "pruned": Variant(pruned.model, _bench_weight_files(folder), f"{folder}")}
    if not args.no_int8:
        for name, source in (("dense", base.model), ("pruned", pruned.model)):
            try:
                variants[f"{name} + INT8"] = Variant(quantize_dynamic_int8(source), None,
                                                     f"{name} with torch.ao dynamic INT8 Linear layers")
            except PrunekitError as exc:
                con.print(f"INT8 variant of {name} skipped: {exc}", markup=False)
    evaluate = _task_evaluator(pruned, data) if data is not None else None
    if evaluate is None:
        from prunekit.eval.bench import output_agreement

        con.print("no task metric for this model / data: measuring output_cosine (each variant's output vs the dense "
                  "baseline's on the bench inputs)")
        evaluate = output_agreement(base.model, inputs)
    con.print(f"measuring {len(variants)} variant(s), {args.threads} thread(s), {args.runs} runs each...")
    result = bench(variants, inputs, evaluate=evaluate, threads=args.threads, runs=args.runs)
    written = result.save(out)
    result.print()  # its own wide console: 10+ columns
    con.print("[bold]wrote[/bold] " + ", ".join(str(p) for p in written))
    return 0


_EXPORT_SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2", "compressed": ".safetensors"}


def cmd_export(args: argparse.Namespace) -> int:
    from prunekit.export.onnx import export_onnx, export_program
    from prunekit.specs import load_pruned

    target = Path(args.out)
    suffix = _EXPORT_SUFFIX[args.format]
    if target.suffix != suffix:
        raise PrunekitError(f"--out {args.out!r} must end in {suffix} for --format {args.format}")
    if target.exists() and not args.overwrite:
        raise PrunekitError(f"--out {args.out!r} exists (pass --overwrite to replace it)")
    data = load_data(args.data) if args.data else None
    loaded = load_pruned(args.dir)
    args.batch_size = 1
    inputs = _bench_inputs(loaded, data, args)
    if args.format == "compressed":
        return _export_compressed(args, loaded.model, inputs, target)
    con = _console()
    if args.format == "onnx":
        result = export_onnx(loaded.model, inputs, target)
        check = "onnxruntime"
    else:
        result = export_program(loaded.model, inputs, target)
        check = "torch.export.load"
    con.print(f"[bold]wrote[/bold] {result.path} ({args.format}, {result.exporter} exporter, "
              f"{result.file_bytes / 2**20:.2f} MiB); {check} output check: max |diff| {result.max_abs_diff:.3g} "
              f"vs PyTorch (tolerance {result.tolerance:.3g})")
    return 0


def _export_compressed(args: argparse.Namespace, model: Any, inputs: Any, target: Path) -> int:
    """Write `model` as one compressed safetensors file, load it into a fresh copy and compare the outputs."""
    import torch

    from prunekit.export.storage import describe, load_compressed, save_compressed
    from prunekit.specs import load_pruned

    model = finalize(model).eval()
    dense_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    save_compressed(model, target, values=args.values)
    again = load_compressed(target, load_pruned(args.dir).model.eval())
    with torch.no_grad():
        diff = _max_output_diff(model, again, inputs)
    info = describe(target)
    _console().print(f"[bold]wrote[/bold] {target} (compressed, values {args.values}, {info.file_bytes / 2**10:.1f} KiB "
                     f"= {info.file_bytes / max(dense_bytes, 1):.3f}x of the fp32 tensors' {dense_bytes / 2**10:.1f} "
                     f"KiB); loaded back: max |output diff| {diff:.3g} vs the model in {args.dir}")
    return 0


def _max_output_diff(a: Any, b: Any, inputs: Any) -> float:
    def run(m: Any) -> Any:
        out = m(**inputs) if isinstance(inputs, dict) else m(*inputs) if isinstance(inputs, tuple) else m(inputs)
        out = getattr(out, "logits", getattr(out, "last_hidden_state", out))
        return (out[0] if isinstance(out, tuple) else out).float()
    return float((run(a) - run(b)).abs().max())

