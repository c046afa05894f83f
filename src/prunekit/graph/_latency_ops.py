"""Plumbing of the latency model: timers, the MAC-term ops of a traced graph called alone at chosen widths, the
pairing of the graph's MAC terms with their nodes, and the JSON timing cache. See `prunekit.graph.latency`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.fx import Node

from prunekit.errors import PrunekitError
from prunekit.graph._walk import op_key

_CONV = ("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
         "conv_transpose3d")
_MAC_OPS = (*_CONV, "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "scaled_dot_product_attention")


def perf_timer(fn: Callable[[], Any], what: str = "", *, min_time: float = 0.05, max_reps: int = 50,
               stat: str = "min") -> float:
    """Seconds of one `fn()`: the minimum (or "median") over repeated calls after two warm-up calls, at least 5
    calls and until `min_time` seconds or `max_reps` calls (CUDA synchronized). The minimum is the default because
    it is the least disturbed by other work on a shared machine, and the op tables and the whole-model timings must
    be disturbed alike for their difference (the remainder) to mean anything."""
    if stat not in ("min", "median"):
        raise PrunekitError(f"latency: stat must be 'min' or 'median', got {stat!r}")
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    with torch.no_grad():
        fn(), fn()
        sync()
        times: list[float] = []
        while len(times) < 5 or (sum(times) < min_time and len(times) < max_reps):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return min(times) if stat == "min" else statistics.median(times)


def default_timer(fn: Callable[[], Any], what: str) -> float:
    """`perf_timer`, with longer runs (0.5 s, up to 200 calls) for the whole-model timings the remainder rests on."""
    if what.startswith("model"):
        return perf_timer(fn, what, min_time=0.5, max_reps=200)
    return perf_timer(fn, what)


class Op:
    """One MAC-term op: how to call it at full width or with fewer channels along its two slots."""

    def __init__(self, node: Node, n_factors: int) -> None:
        self.node = node
        self.key = op_key(node.target)
        self.kind, self.sizes = "scaled", (1, 1)
        self.slots = (-1, -1)  # factor position of slot a (output side) and slot b (input side)
        a = node.args
        shape = lambda i: tuple(a[i].meta["val"].shape) if isinstance(a[i], Node) else None  # noqa: E731
        if self.key in _CONV and _param_like(a[1]):
            transposed = self.key.startswith("conv_transpose") or (
                self.key in ("convolution", "_convolution") and bool(_arg(node, 6, "transposed", False)))
            gi = 8 if self.key in ("convolution", "_convolution") else 6
            self.groups = int(_arg(node, gi, "groups", 1))
            self.x, self.w = shape(0), shape(1)
            self.bias = _arg(node, 2, "bias") is not None
            self.stride, self.padding = _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0)
            if transposed:
                self.dilation = _arg(node, 5 if gi == 8 else 7, "dilation", 1)
                self.out_pad = _arg(node, 7 if gi == 8 else 5, "output_padding", 0)
                if self.groups == 1:  # factors [in?, out]: out = weight dim 1, in = weight dim 0
                    self.kind, self.sizes = "convT", (self.w[1], self.w[0])
                    self.slots = (n_factors - 1, 0 if n_factors == 2 else -1)
            else:
                self.dilation = _arg(node, 5, "dilation", 1)
                per_group, cin_group = self.w[0] // self.groups, self.w[1]
                if self.groups == 1:  # factors [out, in?]
                    self.kind, self.sizes, self.slots = "conv", (self.w[0], self.w[1]), (0, 1 if n_factors == 2 else -1)
                elif cin_group == 1:  # depthwise-like: one unit = one group
                    self.kind, self.sizes, self.slots = "dwconv", (self.groups, 1), (0 if n_factors else -1, -1)
                else:  # grouped: units are positions within a group
                    self.kind, self.sizes = "gconv", (per_group, cin_group)
                    self.slots = (0, 1 if n_factors == 2 else -1)
        elif self.key == "linear" and _param_like(a[1]):
            self.x, self.w, self.bias = shape(0), shape(1), _arg(node, 2, "bias") is not None
            self.kind, self.sizes, self.slots = "linear", (self.w[0], self.w[1]), (0, 1 if n_factors == 2 else -1)

    def signature(self) -> str:
        """Kind, target and every argument (tensors by shape and dtype): equal signatures time alike."""
        def enc(v: Any) -> Any:
            if isinstance(v, Node):
                val = v.meta.get("val")
                return [list(val.shape), str(val.dtype)] if isinstance(val, Tensor) else repr(val)
            if isinstance(v, (list, tuple)):
                return [enc(x) for x in v]
            return repr(v)
        return json.dumps([self.kind, str(self.node.target), enc(list(self.node.args)),
                           {k: enc(v) for k, v in sorted(self.node.kwargs.items())}])

    def runner(self, ka: int, kb: int, device: torch.device) -> Callable[[], Any]:
        """A zero-arg call of the op with ka / kb channels kept along its slots (random tensors)."""
        dtype = self.node.meta["val"].dtype
        rnd = lambda *s: torch.randn(*s, dtype=dtype, device=device)  # noqa: E731
        if self.kind == "scaled":
            return _full_call(self.node, device)
        if self.kind == "linear":
            x, w, b = rnd(*self.x[:-1], kb), rnd(ka, kb), rnd(ka) if self.bias else None
            return lambda: F.linear(x, w, b)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(self.w) - 2]
        sp = tuple(self.x[2:])
        if self.kind == "convT":
            convt = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(self.w) - 2]
            x, w, b = rnd(self.x[0], kb, *sp), rnd(kb, ka, *self.w[2:]), rnd(ka) if self.bias else None
            return lambda: convt(x, w, b, self.stride, self.padding, self.out_pad, 1, self.dilation)
        if self.kind == "conv":
            x, w, b, g = rnd(self.x[0], kb, *sp), rnd(ka, kb, *self.w[2:]), rnd(ka) if self.bias else None, 1
        elif self.kind == "dwconv":
            per = self.w[0] // self.groups
            x, w, b, g = rnd(self.x[0], ka, *sp), rnd(ka * per, 1, *self.w[2:]), rnd(ka * per) if self.bias else None, ka
        else:
            g = self.groups
            x, w, b = rnd(self.x[0], g * kb, *sp), rnd(g * ka, kb, *self.w[2:]), rnd(g * ka) if self.bias else None
        return lambda: conv(x, w, b, self.stride, self.padding, self.dilation, g)


def _param_like(arg: Any) -> bool:
    return isinstance(arg, Node) and arg.op == "placeholder"


def _arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _full_call(node: Node, device: torch.device) -> Callable[[], Any]:
    def make(v: Any) -> Any:
        if isinstance(v, Node):
            val = v.meta.get("val")
            if not isinstance(val, Tensor):
                raise PrunekitError(f"latency: op {node.name} has a non-tensor input {v.name}")
            if val.dtype.is_floating_point:
                return torch.randn(tuple(val.shape), dtype=val.dtype, device=device)
            return torch.zeros(tuple(val.shape), dtype=val.dtype, device=device)
        if isinstance(v, (list, tuple)):
            return type(v)(make(x) for x in v)
        return v
    args, kwargs = make(list(node.args)), {k: make(v) for k, v in node.kwargs.items()}
    return lambda: node.target(*args, **kwargs)


def counts(n: int, grid: Sequence[float]) -> list[int]:
    return [max(1, min(n, int(math.floor(p * n + 0.5)))) for p in grid]


def mac_base(node: Node) -> int | None:
    """The MACs the graph's rules record for this node (to pair nodes with MAC terms), None if not a MAC op."""
    key = op_key(node.target) if node.op == "call_function" else ""
    if key not in _MAC_OPS:
        return None
    shp = [tuple(a.meta["val"].shape) if isinstance(a, Node) and isinstance(a.meta.get("val"), Tensor) else None
           for a in node.args[:3]]
    out = tuple(node.meta["val"].shape) if isinstance(node.meta.get("val"), Tensor) else None
    if out is None:
        return None
    if key in _CONV:
        transposed = key.startswith("conv_transpose") or (key in ("convolution", "_convolution") and bool(node.args[6]))
        return math.prod(shp[0] if transposed else out) * math.prod(shp[1][1:])
    if key == "scaled_dot_product_attention":
        q, k, v = shp
        return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])
    a = shp[1] if key in ("addmm", "baddbmm") else shp[0]
    return math.prod(out) * a[-1] if a else None


def cache_file(cache_dir: str | os.PathLike | None, device: torch.device) -> tuple[Path, dict[str, Any]]:
    root = Path(cache_dir) if cache_dir else Path(os.environ.get("PRUNEKIT_CACHE_DIR") or Path.home() / ".cache" / "prunekit") / "latency"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu {platform.machine()} {platform.processor()}"
    env = {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads()}
    key = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{key}.json", env


def load_cache(path: Path, env: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"env": env, "ops": {}, "models": {}}
    return data if data.get("env") == env else {"env": env, "ops": {}, "models": {}}


def save_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = load_cache(path, data["env"])  # merge with what another process wrote meanwhile
        merged = {"env": data["env"], "ops": {**old["ops"], **data["ops"]}, "models": {**old["models"], **data["models"]}}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(merged, fh)
        os.replace(tmp, path)
    except OSError as exc:
        raise PrunekitError(f"latency: cannot write the cache file {path} ({exc}); set cache_dir or "
                            "PRUNEKIT_CACHE_DIR to a writable folder, or use_cache=False") from exc



def pair_terms(nodes: Sequence[Node], terms: Sequence[Any]) -> list[Node | None]:
    """The node of every MAC term (None where none matches): the graph's rules record terms in node order, and a
    node frozen before its rule counted MACs records none, so each term takes the next node with its MAC count."""
    found = [(n, mac_base(n)) for n in nodes]
    found = [(n, b) for n, b in found if b is not None]
    out: list[Node | None] = []
    pos = 0
    for t in terms:
        hit = next((i for i in range(pos, len(found)) if found[i][1] == t.base), None)
        out.append(found[hit][0] if hit is not None else None)
        pos = hit + 1 if hit is not None else pos
    return out


def graph_key(nodes: Sequence[Node]) -> str:
    """Hash of a traced graph (every node's name, target and output shape): the whole-model timings' cache key."""
    def shape(node: Node) -> Any:
        val = node.meta.get("val")
        return [list(val.shape), str(val.dtype)] if isinstance(val, Tensor) else None
    return hashlib.sha256(json.dumps([[n.name, str(n.target), shape(n)] for n in nodes]).encode()).hexdigest()
