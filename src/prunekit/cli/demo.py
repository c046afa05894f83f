"""`prunekit demo`: the first complete story, offline, in minutes on 2 CPU cores.

Train (or load the cached) digits CNN, measure it on the held-out test split, prune it to 80% sparsity with one
global magnitude threshold (first and last layers kept dense), fine-tune briefly with the masks kept, finalize,
measure again, and write the folder with the model, the recipe, the report and the plots. Then the structured run:
the same dense model with whole channels removed to half its MACs, fine-tuned the same way and measured in the same
process (latency on the same thread count), written to `structured/` (loadable with `prunekit.load`). Finally a
bench (`prunekit.eval.bench`, variants interleaved) of dense, 80% unstructured (stored densely), 80% compressed
(bitmask files with fp16 / INT8 values, loaded back from those files), structured 2x and structured 2x + dynamic
INT8; the summary says what each really saved on this machine, including what it did not, and which variant it
would deploy on this CPU and on an edge device, chosen from the measured numbers (`deploy_lines`). Between the two, a
training-aware step (`demo_training`): gmp (cubic schedule) to 90% vs one-shot at 90%, with and without the same
short fine-tuning, on the test split; the summary states its measured numbers.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from prunekit.api import measure, prune
from prunekit.cli.demo_training import EPOCHS as TRAINING_EPOCHS
from prunekit.cli.demo_training import SPARSITY as TRAINING_SPARSITY
from prunekit.cli.demo_training import training_aware_line, training_aware_run
from prunekit.errors import PrunekitError
from prunekit.eval import PruneReport
from prunekit.eval._advice import SIZE_REAL, SPEEDUP_REAL
from prunekit.eval.bench import BenchResult, Variant, VariantResult, bench
from prunekit.export import atomic_write_text, finalize, output_dir, save_weights
from prunekit.export.files import check_output_dir
from prunekit.export.quantize_dynamic import quantize_dynamic_int8
from prunekit.export.storage import load_compressed, save_compressed
from prunekit.methods.structured import get_plan
from prunekit.recipes import load_recipe, parse_recipe

FINETUNE_EPOCHS = {False: 30, True: 3}
LATENCY_BATCH = 32
STRUCTURED_MACS_RATIO = 0.5  # the structured run keeps half the MACs: "2x fewer MACs"
COMPRESSED_VALUES = ("fp16", "int8")  # value types of the compressed files (bitmask + non-zeros)
ACCURACY_POINTS = 1.0  # a variant "keeps" the accuracy when it lost at most this many points (the demo's goal)
BENCH_RUNS = {False: {"warmup": 10, "runs": 300, "rounds": 10}, True: {"warmup": 2, "runs": 20, "rounds": 4}}
STRUCTURED_RECIPE = {"description": "The demo's structured run - whole channels removed down to half the MACs.",
                     "stages": [{"method": "structured", "target": {"macs_ratio": STRUCTURED_MACS_RATIO}}]}


def _demo_recipe_path() -> Path:
    return Path(str(resources.files("prunekit.recipes") / "builtin" / "demo.yaml"))


def run_demo(out: str | None = None, quick: bool = False, overwrite: bool = False, threads: int = 1) -> int:
    """Run the demo; write its folder to `out` (default `prunekit-demo/<timestamp>`). Returns the exit code.

    `threads` defaults to 1: this model is tiny, and on a shared 2-core machine a second thread mostly waits
    (measured: up to 100x slower steps when the other core is busy), which would make both time and latency noisy.
    """
    from prunekit.data import DIGITS_RECIPE, digits_cnn, evaluate_classifier, load_dataset, train_classifier
    from prunekit.training import recalibrate_batchnorm

    if threads < 1:
        raise PrunekitError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    started = time.perf_counter()
    con = Console(highlight=False)
    out_dir = Path(out) if out else Path("prunekit-demo") / time.strftime("%Y%m%d-%H%M%S")
    check_output_dir(out_dir, overwrite)
    recipe = load_recipe(_demo_recipe_path())
    splits = load_dataset("digits")
    # --quick trains a shorter recipe (cached under its own name) so tests stay fast on a fresh machine.
    model_recipe = replace(DIGITS_RECIPE, epochs=6) if quick else DIGITS_RECIPE

    con.rule("[bold]1. dense model[/bold]: residual CNN on scikit-learn's handwritten digits")
    model = digits_cnn(pretrained=True, progress=True, recipe=model_recipe)
    dense = copy.deepcopy(model)
    acc = lambda m: {"accuracy": evaluate_classifier(m, splits.test)}  # noqa: E731
    dense_acc = acc(model)["accuracy"]
    con.print(f"held-out test accuracy {dense_acc:.2%} on {len(splits.test)} images never used in training")
    x = splits.test.tensors[0][:LATENCY_BATCH]

    con.rule("[bold]2. prune[/bold]: global magnitude to 80% sparsity, first/last layers protected")
    report = prune(model, recipe, x, model_spec="prunekit.data:digits_cnn")
    oneshot_acc = acc(model)["accuracy"]
    batches = torch.utils.data.DataLoader(splits.train, batch_size=64, shuffle=False)
    recalibrate_batchnorm(model, batches, max_batches=16)
    recal_acc = acc(model)["accuracy"]
    con.print(f"accuracy right after pruning: {oneshot_acc:.2%}; after BatchNorm recalibration: {recal_acc:.2%}")

    epochs = FINETUNE_EPOCHS[quick]
    con.rule(f"[bold]3. fine-tune[/bold] {epochs} epoch(s) with the masks kept")
    # Learning-rate rewinding (Renda et al. 2020): fine-tune with the original training schedule, not a tiny lr.
    train_classifier(model, splits.train, epochs=epochs, lr=model_recipe.lr, batch_size=model_recipe.batch_size,
                     seed=0, progress=True, weight_decay=model_recipe.weight_decay,
                     label_smoothing=model_recipe.label_smoothing, augment=model_recipe.augment)
    finalize(model)
    report.add_metric("accuracy_oneshot", dense_acc, oneshot_acc, higher_is_better=True,
                      note="pruned, no BN recalibration, no fine-tuning")
    report.add_metric("accuracy_bn_recalibrated", dense_acc, recal_acc, higher_is_better=True,
                      note="pruned + BatchNorm recalibration, no fine-tuning")

    con.rule("[bold]4. measure[/bold] dense vs pruned on this machine")
    iters = 10 if quick else 30
    measure(report, dense, model, x, evaluate=acc, iters=iters)
    report.print(con)

    structured = _structured_run(con, dense, splits, x, acc, model_recipe, epochs, iters)
    con.rule(f"[bold]6. training-aware[/bold]: gmp (cubic schedule) vs one-shot at {TRAINING_SPARSITY:.0%}, "
             f"{TRAINING_EPOCHS} epochs")
    trained, _ = training_aware_run(dense, splits, x, progress=True)
    training_line = training_aware_line(trained)
    con.print(training_line, markup=False)
    with output_dir(out_dir, overwrite) as tmp:
        save_weights(model, tmp)
        atomic_write_text(tmp / "recipe.yaml", recipe.to_yaml())
        report.save(tmp)
        _save_structured(tmp / "structured", *structured)
        atomic_write_text(tmp / "training_aware.json", json.dumps(asdict(trained), indent=1))
        con.rule(f"[bold]7. bench[/bold]: {len(COMPRESSED_VALUES) + 4} variants, interleaved, {threads} thread(s), "
                 f"batch {LATENCY_BATCH}")
        variants = _bench_variants(tmp, dense, model, structured[0], model_recipe)
        result = bench(variants, x, evaluate=acc, threads=threads, **BENCH_RUNS[quick])
        result.save(tmp)
        lines = _summary_lines(report, structured[1], result, _linear_share(structured[0])) + [training_line]
        atomic_write_text(tmp / "summary.md", result.to_markdown() + "\n## Verdict\n\n" + "\n".join(lines) + "\n")
    _summary(con, result, lines, out_dir, time.perf_counter() - started)
    return 0


def _structured_run(con: Console, dense: torch.nn.Module, splits, x: torch.Tensor, acc, model_recipe, epochs: int,
                    iters: int) -> tuple[torch.nn.Module, PruneReport, object]:
    """Prune a copy of the dense model to half its MACs by removing whole channels, recalibrate BatchNorm,
    fine-tune like the mask run, and measure it against the dense model in the same process."""
    from prunekit.data import train_classifier
    from prunekit.training import recalibrate_batchnorm

    recipe = parse_recipe(STRUCTURED_RECIPE, source="demo (structured)")
    con.rule(f"[bold]5. structured[/bold]: remove whole channels down to {STRUCTURED_MACS_RATIO:g} of the MACs, "
             f"fine-tune {epochs} epoch(s)")
    model = copy.deepcopy(dense)
    report = prune(model, recipe, x, model_spec="prunekit.data:digits_cnn")
    dense_acc, oneshot_acc = acc(dense)["accuracy"], acc(model)["accuracy"]
    recalibrate_batchnorm(model, torch.utils.data.DataLoader(splits.train, batch_size=64, shuffle=False),
                          max_batches=16)
    recal_acc = acc(model)["accuracy"]
    con.print(f"accuracy right after removing channels: {oneshot_acc:.2%}; after BatchNorm recalibration: "
              f"{recal_acc:.2%}")
    train_classifier(model, splits.train, epochs=epochs, lr=model_recipe.lr, batch_size=model_recipe.batch_size,
                     seed=0, progress=True, weight_decay=model_recipe.weight_decay,
                     label_smoothing=model_recipe.label_smoothing, augment=model_recipe.augment)
    report.add_metric("accuracy_oneshot", dense_acc, oneshot_acc, higher_is_better=True,
                      note="channels removed, no BN recalibration, no fine-tuning")
    report.add_metric("accuracy_bn_recalibrated", dense_acc, recal_acc, higher_is_better=True,
                      note="channels removed + BatchNorm recalibration, no fine-tuning")
    measure(report, dense, model, x, evaluate=acc, iters=iters)
    report.print(con)
    return model, report, recipe


def _save_structured(folder: Path, model: torch.nn.Module, report: PruneReport, recipe) -> None:
    folder.mkdir()
    save_weights(model, folder)
    atomic_write_text(folder / "plan.json", get_plan(model).to_json())
    atomic_write_text(folder / "recipe.yaml", recipe.to_yaml())
    report.save(folder)


def _bench_variants(folder: Path, dense: nn.Module, pruned: nn.Module, structured: nn.Module,
                    model_recipe) -> dict[str, Variant]:
    """The variants of the demo's bench, each with the file it ships in (in `folder`, already written)."""
    from prunekit.data import digits_cnn

    variants = {
        "dense": Variant(dense, None, "the trained model, fp32 (file: safetensors of its state dict)"),
        "80% unstructured": Variant(pruned, [folder / "model.safetensors"],
                                    "80% of the inner conv weights zero, finalized, stored densely (model.safetensors)"),
    }
    for values in COMPRESSED_VALUES:  # compressed storage: bitmask + non-zeros, loaded back from that very file
        path = save_compressed(pruned, folder / f"model.bitmask-{values}.safetensors", values=values)
        loaded = load_compressed(path, digits_cnn(pretrained=False, progress=False, recipe=model_recipe))
        variants[f"80% compressed {values}"] = Variant(
            loaded, [path], f"{path.name}: bitmask + {values} non-zeros, loaded back with load_compressed "
                            "(decoded to fp32 dense tensors, so it runs on dense kernels)")
    variants["structured 2x"] = Variant(structured, [folder / "structured" / "model.safetensors"],
                                        f"channels removed to {STRUCTURED_MACS_RATIO:g} of the MACs, fine-tuned")
    variants["structured 2x + INT8"] = Variant(
        quantize_dynamic_int8(structured), None,
        f"structured 2x with torch.ao dynamic INT8 on its nn.Linear layers ({_linear_share(structured):.1%} of its "
        "weights: the convs stay fp32); file: safetensors of the unpacked INT8 state dict")
    return variants


def _linear_share(model: nn.Module) -> float:
    """The fraction of the weight matrices' elements held by nn.Linear layers (what dynamic INT8 reaches)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    total = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    return linear / total if total else 0.0


def _speed(result: BenchResult, v: VariantResult) -> float:
    return result.variant(result.baseline).latency_p50_ms / v.latency_p50_ms


def _zeros_only(result: BenchResult, v: VariantResult) -> bool:
    """Same shapes, float, only more zeros than the baseline: it runs the very same dense kernels, so a latency
    difference is timing noise, not a saving (the rule of `prunekit.eval._advice`)."""
    base = result.variant(result.baseline)
    density = lambda r: r.nonzeros / r.params if r.params else 1.0  # noqa: E731
    return (v.params > SIZE_REAL * base.params and not v.quantized
            and density(v) <= density(base) - 0.05)


def _kept(result: BenchResult, v: VariantResult) -> bool:
    """Accuracy within ACCURACY_POINTS of the baseline's (True when either has no accuracy)."""
    base = result.variant(result.baseline).metrics.get("accuracy")
    acc = v.metrics.get("accuracy")
    return base is None or acc is None or (base - acc) * 100 <= ACCURACY_POINTS + 1e-9


def _variant_text(result: BenchResult, v: VariantResult) -> str:
    acc = v.metrics.get("accuracy")
    acc_text = f", accuracy {acc:.2%}" if acc is not None else ""
    return (f"{v.name} (p50 {v.latency_p50_ms:.3f} ms = {_speed(result, v):.2f}x the speed of dense, file "
            f"{v.file_bytes / 1024:.1f} KiB = {result.file_ratio(v.name):.2f}x{acc_text})")


def deploy_lines(result: BenchResult) -> list[str]:
    """Which variant the demo would deploy on this CPU and on an edge device, chosen from the measured numbers.

    CPU: among the variants whose accuracy is within ACCURACY_POINTS of the baseline's, the lowest latency p50, if
    it is really faster (>= SPEEDUP_REAL); otherwise speed does not decide and the smallest file that is not slower
    wins. Zeros on dense kernels never count as faster (see `_zeros_only`). Edge: the smallest file among those that keep the accuracy and are not slower (> 1 / SPEEDUP_REAL)."""
    base = result.variant(result.baseline)
    kept = [v for v in result.variants if _kept(result, v)]
    not_slower = [v for v in kept if _speed(result, v) > 1.0 / SPEEDUP_REAL]
    faster = [v for v in kept if v is not base and _speed(result, v) >= SPEEDUP_REAL and not _zeros_only(result, v)]
    smallest = min(not_slower, key=lambda v: (v.file_bytes, v.latency_p50_ms), default=base)
    rule = f"accuracy within {ACCURACY_POINTS:g} point of dense"
    if faster:
        pick = min(faster, key=lambda v: v.latency_p50_ms)
        cpu = f"the lowest latency with {rule}"
    else:
        pick = smallest
        cpu = (f"no variant with {rule} was really faster here (>= {SPEEDUP_REAL:.2f}x, zeros on dense kernels not "
               "counted), so speed does not decide: the smallest file that is not slower")
    lines = [f"- deploy on this CPU ({result.threads} thread(s), batch {result.batch_size}): {_variant_text(result, pick)}: "
             f"{cpu}"]
    lost = [v for v in result.variants if not _kept(result, v) and _speed(result, v) >= SPEEDUP_REAL
            and not _zeros_only(result, v)]
    for v in lost:
        lines.append(f"  ({v.name} was {_speed(result, v):.2f}x faster but lost more than {ACCURACY_POINTS:g} point)")
    lines.append(f"- deploy on an edge device: {_variant_text(result, smallest)}: the smallest file with {rule} "
                 f"that is not slower here")
    return lines


def _ratio_text(result: BenchResult, name: str) -> str:
    v = result.variant(name)
    speed = _speed(result, v)
    if _zeros_only(result, v):
        verdict = "same dense kernels: the difference is timing noise"
    elif speed >= SPEEDUP_REAL:
        verdict = "faster"
    elif speed <= 1.0 / SPEEDUP_REAL:
        verdict = "SLOWER"
    else:
        verdict = f"no real change, < {SPEEDUP_REAL:.2f}x"
    return f"file {result.file_ratio(name):.2f}x, speed {speed:.2f}x ({verdict})"


def _summary_lines(mask: PruneReport, structured: PruneReport, result: BenchResult | None = None,
                   linear_share: float | None = None) -> list[str]:
    """The summary's statements, each derived from the measured numbers of this run (`linear_share`: the part of
    the structured model's weights in nn.Linear layers, the only ones dynamic INT8 quantizes)."""
    lines = []
    acc = mask.metric("accuracy")
    if acc is not None and acc.before is not None and acc.after is not None:
        drop = (acc.before - acc.after) * 100
        verdict = "within 1 point" if drop <= 1.0 else "MORE than 1 point"
        lines.append(f"- 80% unstructured: accuracy {acc.before:.2%} -> {acc.after:.2%} ({drop:+.2f} points lost; "
                     f"{verdict} of dense)")
    macs, lat, sacc = structured.metric("macs"), structured.metric("latency_p50_ms"), structured.metric("accuracy")
    size = structured.metric("file_bytes")
    if macs is not None and macs.ratio and sacc is not None and sacc.after is not None:
        lat_text = (f"latency {lat.ratio:.2f}x ({_verdict(lat.ratio)})" if lat is not None and lat.ratio
                    else "latency not measured")
        lat_text = "latency: see the bench" if result is not None else lat_text  # one latency number per variant
        size_text = f", file {size.ratio:.2f}x" if size is not None and size.ratio else ""
        lines.append(f"- structured {1 / macs.ratio:.1f}x fewer MACs: {lat_text}{size_text}, accuracy "
                     f"{sacc.before:.1%} -> {sacc.after:.1%} ({(sacc.before - sacc.after) * 100:+.2f} points lost)")
    if result is None:
        return lines
    compressed = [v.name for v in result.variants if v.name.startswith("80% compressed")]
    lines.append(
        f"- honest bottom line (bench above, interleaved): 80% unstructured stored densely: "
        f"{_ratio_text(result, '80% unstructured')}: the zeros are stored and multiplied like any weight. "
        + "".join(f"{n}: {_ratio_text(result, n)}; " for n in compressed)
        + "compressed storage saves bytes, not time (loaded back, the weights are dense tensors again). "
        f"structured 2x: {_ratio_text(result, 'structured 2x')}; + INT8: {_ratio_text(result, 'structured 2x + INT8')}"
        + (f" (dynamic INT8 reaches only nn.Linear layers: {linear_share:.1%} of the weights here, the classifier "
           "head; the convs, where the time goes, stay fp32)" if linear_share is not None else ""))
    return lines + deploy_lines(result)


def _summary(con: Console, result: BenchResult, lines: list[str], out_dir: Path, seconds: float) -> None:
    con.rule("[bold]summary[/bold]: every variant measured side by side (prunekit.eval.bench)")
    result.print()  # its own wide console: 11 columns
    con.rule("[bold]verdict[/bold]")
    for line in lines:
        con.print(line, markup=False)
    con.print(f"[bold]wrote[/bold] {out_dir} (model.safetensors, model.bitmask-*.safetensors, recipe.yaml, report.*, "
              f"plots, bench.json/.md/.png, summary.md, training_aware.json; structured/ with plan.json: "
              f"prunekit.load('{out_dir / 'structured'}')) in {seconds:.0f} s with {torch.get_num_threads()} thread(s) "
              f"(--threads); 'prunekit report {out_dir}' prints it again")


def _verdict(ratio: float | None, tolerance: float = 0.05) -> str:
    if ratio is None:
        return "not measured"
    if ratio < 1 - tolerance:
        return f"{1 / ratio:.2f}x faster"
    if ratio > 1 + tolerance:
        return f"{ratio:.2f}x SLOWER"
    return "no measurable change"
