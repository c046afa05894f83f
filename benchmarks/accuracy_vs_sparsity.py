"""Benchmark: accuracy vs sparsity (50/80/90/95/98%) on the digits CNN and the MNIST-1D CNN, issue 5.

Variants, every sparsity counted over the targeted layers (every conv / linear except the stem and the classifier):
- one-shot, no fine-tune: `magnitude` (layer scope, l1) on the cached trained model, accuracy right away;
- one-shot + FT: `gmp` with `schedule: {kind: constant}` on the cached trained model: all pruning at step 0 (the same
  layer-scope magnitude masks as above), then exactly gmp's fine-tuning loop (AdamW, cosine LR, BN re-estimated);
- GMP cubic: `gmp` with the default cubic schedule (sparsity rises over the first 3/4 of the steps), same loop and
  epochs as one-shot + FT (the setup of benchmarks/gmp_digits.py, docs/benchmarks.md section 16);
- GMP cubic, global: the same with one global magnitude threshold and no per-layer floor (min_density 0), as IMP;
- IMP ticket / IMP control: one `run_imp` per dataset and seed from a fresh model of the same architecture (the setup
  of benchmarks/imp_digits.py, section 17: global magnitude, late rewinding to step k, control = same mask, fresh
  weights, same steps); p = 1 - 2^(-1/3) of the remaining weights per round, so rounds 3/7/10/13/17 land at
  50.0/80.2/90.1/95.0/98.0% (the table reads those rounds);
- "+ distill": the same with distillation (T=4, alpha=0.9) from the dense teacher: the cached model for one-shot + FT
  and GMP (`gmp` with `distill:`), IMP's own trained dense model (round 0) for IMP (`run_imp(distill=...)`; its
  distilled run trains no control).

Test accuracy on the held-out test split; nothing is chosen on it (no choice is made at all: every run runs as
configured; val accuracy is stored beside it). One torch thread. Every finished run is cached as a JSON file under
~/.cache/prunekit/bench/accuracy_vs_sparsity/ (key: dataset, variant, sparsity, seed and a hash of the settings), so
a rerun resumes where an interrupted one stopped.

Run:  python benchmarks/accuracy_vs_sparsity.py [--seeds 0 1] [--plot docs/img/accuracy_vs_sparsity.png] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts (not a package)

import imp_digits  # noqa: E402  (IMP setup of section 17: run_variant)

import prunekit  # noqa: E402
from prunekit.api import stage  # noqa: E402
from prunekit.data import digits_cnn, evaluate_classifier, example_inputs, load_dataset, mnist1d_cnn  # noqa: E402
from prunekit.cli.demo_training import mask_sparsity  # noqa: E402  (zeroed share of the masked weights)
from prunekit.methods.gmp.config import GmpConfig  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
IMP_P = 1.0 - 2.0 ** (-1.0 / 3.0)  # three rounds per halving of the remaining weights
DISTILL = {"temperature": 4.0, "alpha": 0.9}
DENSE = {"digits": digits_cnn, "mnist1d": mnist1d_cnn}
# Fine-tuning epochs for one-shot / GMP (from the trained model); IMP epochs per training, rewind step k (one epoch).
SETTINGS = {"digits": {"ft_epochs": 10, "ft_lr": 1e-3, "imp_epochs": 15, "imp_lr": 4e-3, "rewind": 20},
            "mnist1d": {"ft_epochs": 5, "ft_lr": 1e-3, "imp_epochs": 6, "imp_lr": 4e-3, "rewind": 54}}
QUICK = {"ft_epochs": 1, "imp_epochs": 1, "rewind": 2}
MASK_VARIANTS = ("one-shot + FT", "GMP cubic", "GMP cubic, global", "movement (hard)", "one-shot + FT + distill",
                 "GMP cubic + distill")
ROWS = ("one-shot, no FT", "one-shot + FT", "GMP cubic", "GMP cubic, global", "movement (hard)", "IMP ticket",
        "IMP control",
        "one-shot + FT + distill", "GMP cubic + distill", "IMP ticket + distill")
CACHE = Path.home() / ".cache" / "prunekit" / "bench" / "accuracy_vs_sparsity"


def imp_rounds(sparsity: float) -> int:
    """The IMP round whose sparsity 1 - (1 - IMP_P)^r is closest to `sparsity` (3 rounds per halving)."""
    return round(3 * math.log2(1.0 / (1.0 - sparsity)))


def gmp_has_distill() -> bool:
    """True when the gmp recipe accepts `distill:` (added in issue 5); the distilled mask variants need it."""
    return "distill" in GmpConfig.model_fields


def run_mask_variant(dataset: str, variant: str, sparsity: float, seed: int, st: dict) -> dict:
    """One-shot / GMP variant from the cached trained model: test / val accuracy and the measured sparsity."""
    data, dense, x = load_dataset(dataset), DENSE[dataset](progress=False), example_inputs(dataset)
    model = copy.deepcopy(dense)
    kind = "cubic" if variant.startswith("GMP") else "constant"
    impl = "prunekit.prune(gmp)"
    if variant == "one-shot, no FT":
        prunekit.prune(model, stage("magnitude", sparsity=sparsity), x)
        impl = "prunekit.prune(magnitude)"
    elif variant.startswith("movement"):  # hard top-k, scores from |W| (the default), cubic schedule like GMP
        prunekit.prune(model, stage("movement", sparsity=sparsity, epochs=st["ft_epochs"], lr=st["ft_lr"], seed=seed),
                       x, data=data)
        impl = "prunekit.prune(movement)"
    elif not variant.endswith("distill"):
        scope = {"scope": "global", "min_density": 0.0} if variant.endswith("global") else {}  # IMP's threshold
        prunekit.prune(model, stage("gmp", sparsity=sparsity, epochs=st["ft_epochs"], lr=st["ft_lr"], seed=seed,
                                    schedule={"kind": kind}, **scope), x, data=data)
    elif gmp_has_distill():
        prunekit.prune(model, stage("gmp", sparsity=sparsity, epochs=st["ft_epochs"], lr=st["ft_lr"], seed=seed,
                                    schedule={"kind": kind}, distill=DISTILL), x, data=data)
        impl = "prunekit.prune(gmp, distill)"
    else:
        raise SystemExit("this prunekit's gmp has no `distill:` field; the distilled variants need it")
    return {"test": evaluate_classifier(model, data.test), "val": evaluate_classifier(model, data.val),
            "sparsity": mask_sparsity(model), "impl": impl}


def run_imp_variant(dataset: str, distill: bool, seed: int, rounds: int, st: dict) -> dict:
    """One IMP run (imp_digits.run_variant): per round sparsity, ticket and control test / val accuracy."""
    ns = SimpleNamespace(rounds=rounds, p=IMP_P, epochs=st["imp_epochs"], lr=st["imp_lr"], rewind=st["rewind"],
                         seed=seed, control=not distill, no_control_for_distill=True, min_density=0.0, progress=False)
    res, _ = imp_digits.run_variant(dataset, "k+distill" if distill else "k", ns)
    return {"rounds": [vars(r) for r in res.rounds], "total_steps": res.total_steps}


def _cached(key: dict, cache: Path, fn, run: bool = True) -> dict | None:
    """The cached result of `key`, else `fn()` stored under it (None when not cached and `run` is False)."""
    name = "-".join(str(v) for v in key.values() if not isinstance(v, dict)).replace(" ", "_").replace(",", "")
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    path = cache / f"{name.replace('+', 'p').replace('/', '_')}-{digest}.json"
    if path.exists():
        return json.loads(path.read_text())
    if not run:
        return None
    start = time.perf_counter()
    out = {**fn(), "seconds": round(time.perf_counter() - start, 2), "key": key}
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
    print(f"  {path.name}: {out['seconds']:.1f} s", file=sys.stderr, flush=True)
    return out


def collect(datasets, sparsities, seeds, quick: bool, cache: Path, run: bool = True, only=None) -> dict:
    """Run (or read from the cache) every variant; {dataset: {row: {sparsity: [per-seed results]}}} + dense.

    With `run` False nothing is trained: only the cached runs are reported (cells average what is there); with
    `only` (variant names, "IMP" / "IMP + distill" for the IMP runs) only those are trained, the rest read if cached.
    """
    todo = lambda name: run and (not only or name in only)  # noqa: E731
    results: dict = {}
    rounds = max(imp_rounds(s) for s in sparsities)
    for seed in seeds:
        for ds in datasets:
            st = {**SETTINGS[ds], **(QUICK if quick else {})}
            res = results.setdefault(ds, {"rows": {r: {} for r in ROWS}, "imp_curves": {}, "settings": st,
                                          "seeds": [], "imp_dense": []})
            for distilled in (False, True):
                for variant in ("one-shot, no FT",) + MASK_VARIANTS:
                    if variant.endswith("distill") != distilled:
                        continue
                    if variant == "one-shot, no FT" and seed != seeds[0]:
                        continue  # no training, no seed: one run is the result
                    for s in sparsities:
                        key = {"dataset": ds, "variant": variant, "sparsity": s, "seed": seed, "settings": st}
                        if distilled:  # a gmp with `distill:` and the benchmark's own loop are different runs
                            key["impl"] = "recipe"
                        out = _cached(key, cache, lambda v=variant, s=s: run_mask_variant(ds, v, s, seed, st),
                                  todo(variant))
                        if out is not None:
                            res["rows"][variant].setdefault(s, []).append(out)
                key = {"dataset": ds, "variant": "IMP + distill" if distilled else "IMP", "rounds": rounds,
                       "seed": seed, "settings": st}
                out = _cached(key, cache, lambda d=distilled: run_imp_variant(ds, d, seed, rounds, st),
                              todo(key["variant"]))
                if out is None:
                    continue
                by_round = {r["round"]: r for r in out["rounds"]}
                label = "IMP ticket + distill" if distilled else "IMP ticket"
                res["imp_curves"].setdefault(label, []).append(out["rounds"])
                for s in sparsities:
                    r = by_round[imp_rounds(s)]
                    res["rows"][label].setdefault(s, []).append(
                        {"test": r["test_accuracy"], "val": r["val_accuracy"], "sparsity": r["sparsity"]})
                    if not distilled:
                        res["rows"]["IMP control"].setdefault(s, []).append(
                            {"test": r["control_test_accuracy"], "val": r["control_val_accuracy"],
                             "sparsity": r["sparsity"]})
                if not distilled:
                    res["seeds"].append(seed)
                    res["imp_dense"].append(by_round[0]["test_accuracy"])
                    res["imp_curves"].setdefault("IMP control", []).append(
                        [{**r, "test_accuracy": r["control_test_accuracy"]} for r in out["rounds"] if r["round"]])
            data = load_dataset(ds)
            res["dense"] = evaluate_classifier(DENSE[ds](progress=False), data.test)
    return results


def _cell(runs: list[dict] | None, n_seeds: int) -> str:
    """Mean test accuracy %, ± half the range over seeds, and (n=k) when fewer than the table's seeds are cached."""
    if not runs:
        return "-"
    accs = [100 * r["test"] for r in runs]
    mean = sum(accs) / len(accs)
    text = f"{mean:.1f}" if len(accs) == 1 else f"{mean:.1f} ±{(max(accs) - min(accs)) / 2:.1f}"
    return text + (f" (n={len(accs)})" if len(accs) < n_seeds else "")


def _pcts(runs_by_s: dict, sparsities) -> str:
    return " / ".join(f"{runs_by_s[s][0]['sparsity']:.1%}" if s in runs_by_s else "-" for s in sparsities)


def render(results: dict, sparsities) -> str:
    """One markdown table per dataset: a row per variant, a column per target sparsity (mean test accuracy %)."""
    out = []
    for ds, res in results.items():
        st, seeds = res["settings"], res["seeds"]
        imp_dense = f"{100 * sum(res['imp_dense']) / len(res['imp_dense']):.1f}" if res["imp_dense"] else "-"
        out += [f"### {ds}: test accuracy % (mean over seeds {', '.join(map(str, seeds)) or '-'}; ± half the range)",
                "", f"dense (cached trained model): {100 * res['dense']:.1f}; IMP's own dense (round 0, "
                f"{st['imp_epochs']} epochs from scratch): {imp_dense}. Fine-tuning {st['ft_epochs']} "
                f"epochs (one-shot + FT, GMP); IMP {st['imp_epochs']} epochs per round, rewind k={st['rewind']}.", "",
                "| variant | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |",
                "|---|" + "---:|" * len(sparsities)]
        for row in ROWS:
            cells, n = res["rows"][row], 1 if row == "one-shot, no FT" else len(seeds)
            if cells:
                out.append(f"| {row} | " + " | ".join(_cell(cells.get(s), n) for s in sparsities) + " |")
        out += ["", f"measured sparsity of the targeted layers: IMP rounds {_pcts(res['rows']['IMP ticket'], sparsities)}"
                f"; one-shot / GMP {_pcts(res['rows']['GMP cubic'], sparsities)}", ""]
        impls = {r["impl"] for row in MASK_VARIANTS if row.endswith("distill") for runs in res["rows"][row].values() for r in runs}
        out += [f"distilled one-shot / GMP ran through: {'; '.join(sorted(impls)) or '-'}", ""]
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    """Two panels (one per dataset): test accuracy vs sparsity on a -log10(1 - s) axis, dense as a dotted line.

    A distilled variant shares its plain variant's colour, dashed. One-shot without fine-tuning (near chance past
    50%) is written in the panel instead of drawn, so the y axis keeps the resolution the other lines need.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def x(s: float) -> float:
        return -math.log10(1.0 - s)

    plain = [r for r in ROWS if not r.endswith("distill") and r != "one-shot, no FT"]
    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 5.2), squeeze=False)
    for ax, (ds, res) in zip(axes[0], results.items()):
        low = 50.0
        for row in ROWS[1:]:
            cells = res["rows"][row]
            if not cells:
                continue
            if row in res["imp_curves"]:  # every IMP round, not only the five read by the table
                curves = res["imp_curves"][row]
                pts = [(c[0]["sparsity"], sum(v["test_accuracy"] for v in c) / len(c)) for c in zip(*curves)]
            else:
                pts = [(s, sum(r["test"] for r in runs) / len(runs)) for s, runs in sorted(cells.items())]
            low = min(low, min(100 * a for _, a in pts) - 2)
            color = f"C{plain.index(row.removesuffix(' + distill'))}"
            ax.plot([x(s) for s, _ in pts], [100 * a for _, a in pts], "--" if row.endswith("distill") else "-",
                    marker="o", ms=3, color=color, label=row)
        ax.axhline(100 * res["dense"], color="k", lw=0.8, ls=":", label="dense (cached)")
        no_ft = res["rows"]["one-shot, no FT"]
        if no_ft:
            ax.text(0.02, 0.03, "one-shot, no fine-tune (off scale): " + ", ".join(
                f"{s:.0%}: {100 * runs[0]['test']:.0f}%" for s, runs in sorted(no_ft.items())),
                transform=ax.transAxes, fontsize=7)
        ticks = [0.5, 0.8, 0.9, 0.95, 0.98]
        ax.set_xticks([x(s) for s in ticks], [f"{s:.0%}" for s in ticks])
        ax.set_xlim(x(0.4), x(0.985))
        ax.set_ylim(max(0.0, low), 100)
        ax.set_xlabel("sparsity of the targeted layers (log scale of 1 - sparsity)")
        ax.set_ylabel("test accuracy % (held-out split)")
        ax.set_title(f"{ds} CNN")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", choices=sorted(SETTINGS), default=["digits", "mnist1d"])
    ap.add_argument("--sparsities", default=",".join(map(str, SPARSITIES)))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 epoch everywhere")
    ap.add_argument("--plot", type=Path, default=None, help="write the PNG here (e.g. docs/img/accuracy_vs_sparsity.png)")
    ap.add_argument("--cache-dir", type=Path, default=CACHE)
    ap.add_argument("--no-run", action="store_true", help="train nothing: report only the runs already cached")
    ap.add_argument("--only", nargs="+", choices=MASK_VARIANTS + ("one-shot, no FT", "IMP", "IMP + distill"),
                    help="train only these variants (the others are reported when cached)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sparsities = [float(v) for v in args.sparsities.split(",")]
    results = collect(args.datasets, sparsities, args.seeds, args.quick, args.cache_dir, run=not args.no_run,
                      only=args.only)
    print(render(results, sparsities))
    if args.plot is not None:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
