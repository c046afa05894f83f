"""Model specs (`HF folder`, `timm:NAME`, `module:function`), checkpoints and data specs turned into objects.

Loading never unpickles: checkpoints are safetensors or `torch.load(weights_only=True)`; nothing is downloaded
(`timm:NAME` builds the architecture with random weights; load trained weights with a checkpoint).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.masks import import_torch_prune_state_dict

MODEL_SPEC_FORMS = "a Hugging Face folder (with config.json), 'timm:NAME', or 'module:function'"


@dataclass
class LoadedModel:
    """A model built from a spec, with how it was built and inputs to trace it."""

    model: nn.Module
    spec: str
    kind: str  # "hf" | "timm" | "callable"
    example_inputs: Any = None
    tokenizer: Any = None
    rebuilt: str | None = None  # load_pruned: how the model was rebuilt (from_pretrained, base spec + plan, ...)


def _import_callable(spec: str, what: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise PrunekitError(f"{what} {spec!r} is not 'module:function'")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the working directory are importable
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise PrunekitError(f"{what} {spec!r}: cannot import module {mod_name!r} ({exc})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PrunekitError(f"{what} {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PrunekitError(f"{what} {spec!r}: {attr!r} is not callable")
    return obj


def load_model(spec: str, checkpoint: str | Path | None = None, *, weights: bool = True) -> LoadedModel:
    """Build the model named by `spec` and, if given, load a checkpoint's weights into it.

    `weights=False` asks only for the architecture: a `module:function` with a `pretrained` parameter is called
    with `pretrained=False` (its weights would be overwritten anyway; this avoids loading or training them).
    """
    path = Path(spec)
    if path.is_dir():
        loaded = _load_hf(path)
    elif spec.startswith("timm:"):
        loaded = _load_timm(spec)
    elif ":" in spec and not path.exists():
        obj = _import_callable(spec, "model spec")
        model = obj(pretrained=False) if not weights and _takes_pretrained(obj) else obj()
        if isinstance(model, tuple) and model and isinstance(model[0], nn.Module):
            model = model[0]
        if not isinstance(model, nn.Module):
            raise PrunekitError(f"model spec {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        loaded = LoadedModel(model, spec, "callable", getattr(model, "example_inputs", None))
    else:
        raise PrunekitError(f"model spec {spec!r} not found: give {MODEL_SPEC_FORMS}")
    if checkpoint is not None:
        load_weights(loaded.model, checkpoint)
    return loaded


def _takes_pretrained(obj: Any) -> bool:
    try:
        return "pretrained" in inspect.signature(obj).parameters
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return False


def _load_hf(path: Path) -> LoadedModel:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise PrunekitError(f"model folder {str(path)!r} has no config.json (expected {MODEL_SPEC_FORMS})")
    try:
        import transformers
    except ImportError:
        raise PrunekitError("loading a Hugging Face folder needs transformers: pip install 'prunekit[hf]'") from None
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise PrunekitError(f"{cfg_file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    archs = config.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    cls = cls or transformers.AutoModel
    try:
        model = cls.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise PrunekitError(f"cannot load Hugging Face model from {str(path)!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    tokenizer = None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    except Exception:  # a folder without a tokenizer is fine; inputs are then random token ids
        tokenizer = None
    return LoadedModel(model, str(path), "hf", hf_example_inputs(model, tokenizer), tokenizer)


def hf_example_inputs(model: nn.Module, tokenizer: Any = None, seq_len: int = 16) -> Any:
    """Small tracing inputs for a Hugging Face model: pixel_values for vision configs, token ids otherwise."""
    cfg = getattr(model, "config", None)
    main_input = getattr(model, "main_input_name", "input_ids")
    if main_input == "pixel_values":
        size = getattr(cfg, "image_size", 224)
        channels = getattr(cfg, "num_channels", 3)
        return {"pixel_values": torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))}
    if tokenizer is not None:
        text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
        enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=seq_len)
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    vocab = int(getattr(cfg, "vocab_size", 100) or 100)
    ids = torch.randint(0, vocab, (1, seq_len), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids}


def _load_timm(spec: str) -> LoadedModel:
    name = spec[len("timm:"):]
    try:
        import timm
    except ImportError:
        raise PrunekitError("timm models need timm: pip install 'prunekit[vision]'") from None
    if not timm.is_model(name):
        from prunekit.errors import suggest

        raise PrunekitError(f"unknown timm model {name!r}.{suggest(name, timm.list_models())}")
    model = timm.create_model(name, pretrained=False)  # never downloads; weights come from a checkpoint
    model.eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return LoadedModel(model, spec, "timm", torch.randn(1, *size, generator=torch.Generator().manual_seed(0)))


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from safetensors, or a weights-only torch file; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise PrunekitError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PrunekitError(f"{path}: not a valid safetensors file ({exc})") from None
    else:
        try:
            path_text = str(path)
            state = torch.load(path_text, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError, RuntimeError (not a zip), EOFError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PrunekitError(
                f"{path}: not a safetensors or weights-only torch checkpoint ({first[:200]}); "
                "prunekit never unpickles arbitrary objects"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PrunekitError(f"{path}: expected a mapping of tensor names to tensors (a state dict)")
    return import_torch_prune_state_dict(state)


def load_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load a checkpoint into `model` strictly; a key or shape mismatch is a one-line error."""
    state = read_checkpoint(checkpoint)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise PrunekitError(
            f"{checkpoint}: does not fit the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise PrunekitError(
            f"{checkpoint}: shape of {k!r} is {tuple(state[k].shape)}, the model expects {tuple(own[k].shape)}"
        )
    model.load_state_dict(state, strict=True)


DATA_SPEC_FORMS = "a built-in dataset (digits, mnist1d, shakespeare, shakespeare-genre) or 'module:function'"


def load_data(spec: str) -> Any:
    """Return the `DatasetSplits` named by a built-in dataset name, or what a `module:function` returns."""
    from prunekit.data import list_datasets, load_dataset

    if spec in list_datasets():
        return load_dataset(spec)
    if ":" in spec:
        return _import_callable(spec, "data spec")()
    from prunekit.errors import choices_text, suggest

    raise PrunekitError(
        f"unknown data spec {spec!r}.{suggest(spec, list_datasets())} Give {DATA_SPEC_FORMS}; "
        f"built-in: {choices_text(list_datasets())}"
    )


def data_example_inputs(loaded: LoadedModel, data: Any, batch_size: int = 4) -> Any:
    """A small batch from the data's test split, in the form the model takes (token ids for a text model)."""
    test = getattr(data, "test", None)
    if test is None or len(test) == 0:
        return None
    first = test[0]
    if isinstance(first, (tuple, list)) and isinstance(first[0], Tensor):
        return torch.stack([test[i][0] for i in range(min(batch_size, len(test)))])
    if loaded.tokenizer is not None:
        texts = [t[0] if isinstance(t, (tuple, list)) else t for t in (test[i] for i in range(min(2, len(test))))]
        texts = ["\n".join(str(t).splitlines()[:8]) for t in texts]
        enc = loaded.tokenizer(texts, return_tensors="pt", truncation=True, max_length=64, padding=True)
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    return None


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse '1,3,224,224' into a shape; one-line error otherwise."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise PrunekitError(f"--input-shape {text!r} is not a shape like 1,3,224,224")
    return shape
