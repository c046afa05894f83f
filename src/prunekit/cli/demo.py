"""`prunekit demo`: the first complete story, offline, in minutes on 2 CPU cores.

Train (or load the cached) digits CNN, measure it on the held-out test split, prune it to 80% sparsity with one
global magnitude threshold (first and last layers kept dense), fine-tune briefly with the masks kept, finalize,
measure again, and write the folder with the model, the recipe, the report and the plots. The summary says what
was really saved on this machine, including what was not.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

import torch
from rich.console import Console

from prunekit.api import measure, prune
from prunekit.errors import PrunekitError
from prunekit.export import atomic_write_text, finalize, output_dir, save_weights
from prunekit.export.files import check_output_dir
from prunekit.recipes import load_recipe

FINETUNE_EPOCHS = {False: 30, True: 3}
LATENCY_BATCH = 32


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
    measure(report, dense, model, x, evaluate=acc, iters=10 if quick else 30)
    with output_dir(out_dir, overwrite) as tmp:
        save_weights(model, tmp)
        atomic_write_text(tmp / "recipe.yaml", recipe.to_yaml())
        report.save(tmp)
    report.print(con)
    _summary(con, report, out_dir, time.perf_counter() - started)
    return 0


def _summary(con: Console, report, out_dir: Path, seconds: float) -> None:
    con.rule("[bold]summary[/bold]")
    acc = report.metric("accuracy")
    if acc is not None and acc.before is not None and acc.after is not None:
        drop = (acc.before - acc.after) * 100
        verdict = "within 1 point" if drop <= 1.0 else "MORE than 1 point"
        con.print(f"- accuracy {acc.before:.2%} -> {acc.after:.2%} ({drop:+.2f} points lost; {verdict} of dense)")
    con.print(
        "- honest bottom line: unstructured zeros still run on dense kernels and are stored densely, so this run "
        "buys accuracy-preserving sparsity, not speed or bytes. Speed on CPUs/GPUs comes from removing whole "
        "channels (structured pruning) and bytes from compressed sparse storage; neither is in this version yet."
    )
    con.print(f"[bold]wrote[/bold] {out_dir} (model.safetensors, recipe.yaml, report.json, report.md, plots) "
              f"in {seconds:.0f} s with {torch.get_num_threads()} thread(s) (--threads)")
