"""Entry point of the `prunekit` command: argument parsing and the user-error boundary.

Every `PrunekitError` (a user mistake) becomes one line on stderr and exit code 2; argparse errors too. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prunekit._version import __version__
from prunekit.errors import PrunekitError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PrunekitError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands: prune, report, validate, list, demo, bench, export, analyze)."""
    parser = _Parser(prog="prunekit", description="Prune PyTorch models and measure what the pruning really saved.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("prune", help="run a recipe on a model and write the pruned model + report to DIR")
    p.add_argument("recipe", help="YAML recipe file (stages: [{method: NAME, ...}])")
    p.add_argument("--model", required=True, help="HF folder, 'timm:NAME' or 'module:function'")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--data", help="built-in dataset (digits, mnist1d, shakespeare, shakespeare-genre) or module:function")
    p.add_argument("--checkpoint", help="weights to load into the model (.safetensors or a weights-only torch file)")
    p.add_argument("--input-shape", help="example input shape for tracing, e.g. 1,3,224,224 (when --data gives none)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--no-measure", action="store_true", help="skip latency / memory / file-size measurements")
    p.add_argument("--resume", metavar="DIR", help="training stages (gmp) checkpoint into DIR/stage-<i> and, when "
                   "run again with the same DIR, resume from the latest checkpoint there")

    p = sub.add_parser("report", help="print the report saved in DIR")
    p.add_argument("dir", help="an output folder written by 'prunekit prune' or 'prunekit demo'")

    p = sub.add_parser("validate", help="check a recipe and print it with every default resolved")
    p.add_argument("recipe")

    sub.add_parser("list", help="list the registered methods, patterns, importance criteria and schedules")

    p = sub.add_parser("demo", help="train/load a digits CNN, prune 80%%, fine-tune, measure and report")
    p.add_argument("--out", help="output folder (default: prunekit-demo/<timestamp>)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (for tests)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for training and timing (default 1)")

    p = sub.add_parser("bench", help="measure dense vs pruned vs pruned + INT8 side by side and say what is real")
    p.add_argument("dir", help="a folder written by 'prunekit prune'")
    p.add_argument("--baseline", help="the dense model: a 'prunekit prune' folder or a model spec (default: the base "
                   "model recorded in DIR's report.json)")
    p.add_argument("--data", help="dataset for the inputs and the task metric (as for 'prune --data')")
    p.add_argument("--input-shape", help="random input of this shape, e.g. 8,1,8,8 (when --data gives none)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="samples per timed call with --data (default 4; text data gives 2 texts)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads, pinned and reported (default 1)")
    p.add_argument("--runs", type=int, default=50, help="timed calls per variant (default 50)")
    p.add_argument("--no-int8", action="store_true", help="skip the dynamic INT8 variants")
    p.add_argument("--out", help="folder for bench.json, bench.md, bench.png (default: DIR)")

    p = sub.add_parser("export", help="export the model in DIR to ONNX (checked in onnxruntime), torch.export or "
                                      "compressed safetensors (checked by loading it back)")
    p.add_argument("dir", help="a folder written by 'prunekit prune'")
    p.add_argument("--format", required=True, choices=["onnx", "torch-export", "compressed"],
                   help="onnx (.onnx file), torch-export (.pt2 file) or compressed (prunekit's compressed "
                   "safetensors: bitmask / packed N:M + values, docs/storage.md)")
    p.add_argument("--values", default="fp32", choices=["fp32", "fp16", "int8", "int4"],
                   help="compressed only: how the kept values are stored (default fp32: lossless)")
    p.add_argument("--out", required=True, help="the file to write (.onnx, .pt2 or .safetensors)")
    p.add_argument("--data", help="dataset whose test batch gives the example inputs (as for 'prune --data')")
    p.add_argument("--input-shape", help="random example input of this shape (when --data gives none)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    from prunekit.cli.analyze import add_parser as add_analyze

    add_analyze(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        from prunekit.cli import commands

        return int(getattr(commands, f"cmd_{args.command}")(args) or 0)
    except PrunekitError as exc:
        print(f"prunekit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted; no output folder was left half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
