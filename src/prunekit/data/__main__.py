"""Build (or verify) the cached artefacts and print their recorded metrics.

    python -m prunekit.data                    # all three: digits_cnn, mnist1d_cnn, tiny_llama
    python -m prunekit.data tiny_llama --quiet
    PRUNEKIT_CACHE_DIR=/some/dir python -m prunekit.data digits_cnn
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from prunekit.data.cache import cache_root
from prunekit.data.models.classifiers import DIGITS_RECIPE, MNIST1D_RECIPE, classifier_path
from prunekit.data.models.llama import tiny_llama_path

ARTEFACTS: dict[str, Callable[[bool], Path]] = {
    "digits_cnn": lambda progress: classifier_path("digits_cnn", DIGITS_RECIPE, DIGITS_RECIPE, progress),
    "mnist1d_cnn": lambda progress: classifier_path("mnist1d_cnn", MNIST1D_RECIPE, MNIST1D_RECIPE, progress),
    "tiny_llama": lambda progress: tiny_llama_path(progress),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m prunekit.data`."""
    parser = argparse.ArgumentParser(prog="python -m prunekit.data", description=__doc__.splitlines()[0])
    parser.add_argument("artefacts", nargs="*", metavar="ARTEFACT",
                        help=f"which to build: {', '.join(ARTEFACTS)} (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    unknown = [a for a in args.artefacts if a not in ARTEFACTS]
    if unknown:
        parser.error(f"unknown artefact {unknown[0]!r}; valid: {', '.join(ARTEFACTS)}")
    print(f"cache: {cache_root()}")
    for name in args.artefacts or list(ARTEFACTS):
        folder = ARTEFACTS[name](not args.quiet)
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        summary = {"params": manifest["params"], "train_seconds": manifest["train_seconds"], **manifest["metrics"]}
        print(f"{name}: {folder}")
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
