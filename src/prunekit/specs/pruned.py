"""A folder written by `prunekit prune` (or `prunekit demo`) rebuilt into its model, without unpickling.

A Hugging Face folder whose config builds the saved shapes loads with `from_pretrained`; otherwise the base model
is rebuilt from its spec (recorded in report.json), plan.json is replayed on it, and the saved weights are loaded
strictly. Every failure is one line naming the file, the spec or the tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.specs.models import MODEL_SPEC_FORMS, LoadedModel, _load_hf, load_model, read_checkpoint

PRUNED_FOLDER = "a folder written by 'prunekit prune'"


def load(folder: str | Path, *, base: str | None = None) -> nn.Module:
    """The model saved in `folder` by `prunekit prune` (or `prunekit demo`), rebuilt without unpickling, in eval
    mode. `base` overrides the base model spec recorded in report.json. See `load_pruned` for the details."""
    return load_pruned(folder, base=base).model


def load_pruned(folder: str | Path, *, base: str | None = None) -> LoadedModel:
    """Rebuild a pruned model from its output folder; `rebuilt` says how.

    - A Hugging Face folder whose config.json builds the saved shapes (mask pruning, or structured pruning with the
      config edited): `from_pretrained`, tokenizer included.
    - Otherwise, with plan.json (structured pruning): the base model is built from its spec (`base`, default the
      `model_spec` in report.json) as architecture only, since the saved weights hold everything (a checkpoint
      given at prune time included); the plan is replayed and the saved weights are loaded strictly.
    - Without plan.json: the base model, then the saved weights (mask pruning keeps every shape).

    Raises:
        PrunekitError: a missing folder or weights, an invalid plan, a base spec that cannot be built, or weights
            that do not fit the rebuilt model (naming the first tensor).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PrunekitError(f"pruned model folder {str(folder)!r} not found (give {PRUNED_FOLDER})")
    plan_file = folder / "plan.json"
    plan = read_plan(plan_file) if plan_file.exists() else None
    files = _weight_files(folder)
    if (folder / "config.json").is_file() and _hf_config_fits(folder, files, plan is None):
        loaded = _load_hf(folder)
        loaded.rebuilt = "from_pretrained (the config builds the saved shapes)"
        return loaded
    spec = base or _recorded_spec(folder)
    try:
        loaded = load_model(spec, weights=False)
    except PrunekitError as exc:
        raise PrunekitError(f"base model of {str(folder)!r}: {exc}") from None
    how = [f"base {spec!r}"]
    if plan is not None:
        from prunekit.methods.structured import apply_plan

        try:
            apply_plan(loaded.model, plan)
        except PrunekitError as exc:
            raise PrunekitError(f"{plan_file} does not fit the base model {spec!r}: {exc}") from None
        how.append(f"plan.json ({len(plan.steps)} step(s))")
    _load_saved(loaded.model, files)
    loaded.model.eval()
    loaded.rebuilt = " + ".join([*how, ", ".join(f.name for f in files)])
    return loaded


def read_plan(path: str | Path) -> Any:
    """The `PruningPlan` in a plan.json file; errors name the file."""
    path = Path(path)
    from prunekit.methods.structured import PruningPlan

    try:
        return PruningPlan.from_json(path.read_text(encoding="utf-8"))
    except PrunekitError as exc:
        raise PrunekitError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PrunekitError(f"{path}: cannot be read ({exc})") from None


def _weight_files(folder: Path) -> list[Path]:
    """model.safetensors, or the shards a Hugging Face index names."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise PrunekitError(f"{index}: not a valid safetensors index ({exc})") from None
        return [folder / s for s in shards]
    raise PrunekitError(f"{str(folder)!r} has no model.safetensors (give {PRUNED_FOLDER})")


def _file_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                shapes.update({k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()})  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise PrunekitError(f"{f}: not a valid safetensors file ({exc})") from None
    return shapes


def _hf_config_fits(folder: Path, files: list[Path], required: bool) -> bool:
    """Whether the folder's config builds every saved tensor's shape (checked on the meta device, no weights);
    `required` (no plan to fall back on): a mismatch is an error naming the tensor."""
    try:
        import transformers
    except ImportError:
        raise PrunekitError("loading a Hugging Face folder needs transformers: pip install 'prunekit[hf]'") from None
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise PrunekitError(f"{folder / 'config.json'}: {str(exc).splitlines()[0]}") from None
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    try:
        with torch.device("meta"):
            model = cls(config) if cls is not None else transformers.AutoModel.from_config(config)
    except Exception as exc:  # an architecture this transformers cannot build: say which, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunekitError(f"{folder / 'config.json'}: cannot build {archs[0] if archs else 'the model'} "
                            f"({first[:200]})") from None
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in _file_shapes(files).items():
        if own.get(key, shape) != shape:
            if required:
                raise PrunekitError(f"{folder}: shape of {key!r} is {shape}, the model config.json builds expects "
                                    f"{own[key]} (and there is no plan.json to rebuild it from its base)")
            return False
    return True


def _recorded_spec(folder: Path) -> str:
    path = folder / "report.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8")).get("model_spec") if path.is_file() else None
    except (OSError, json.JSONDecodeError, AttributeError):
        spec = None
    if not isinstance(spec, str) or not spec:
        raise PrunekitError(f"{str(folder)!r}: no base model spec recorded in report.json; pass base= "
                            f"({MODEL_SPEC_FORMS}), the model it was pruned from")
    return spec


def _load_saved(model: nn.Module, files: list[Path]) -> None:
    """Load saved weights strictly; a key missing from the file is fine only when it aliases a saved one (tied
    weights are stored once)."""
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(read_checkpoint(f))
    own = model.state_dict(keep_vars=True)
    saved_ids = {id(own[k]) for k in state if k in own}
    missing = sorted(k for k in own if k not in state and id(own[k]) not in saved_ids)
    unexpected = sorted(set(state) - set(own))
    where = files[0] if len(files) == 1 else files[0].parent
    if missing or unexpected:
        raise PrunekitError(
            f"{where}: does not fit the rebuilt model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for key in (k for k in own if k in state):  # model order: the first mismatching layer is named
        if tuple(own[key].shape) != tuple(state[key].shape):
            raise PrunekitError(f"{where}: shape of {key!r} is {tuple(state[key].shape)}, the rebuilt model expects "
                                f"{tuple(own[key].shape)}")
    model.load_state_dict(state, strict=False)  # every key checked above; aliases are filled through their twin
