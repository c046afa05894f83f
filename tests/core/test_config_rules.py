"""The shared targets / ignore rules (config.rules.TargetedConfig): same error text wherever a config uses them."""

from __future__ import annotations

import pytest

from prunekit.api import stage
from prunekit.errors import PrunekitError


@pytest.mark.parametrize(("method", "default"), [
    ("magnitude", "every Linear / Conv layer"),
    ("random", "every Linear / Conv layer"),
    ("gmp", "every Linear / Conv layer"),
    ("wanda", "every Linear inside the transformer blocks"),
    ("sparsegpt", "every Linear inside the transformer blocks"),
])
def test_empty_targets_say_what_omitting_them_targets(method, default):
    with pytest.raises(PrunekitError, match=f"targets is empty: omit it to target {default}"):
        stage(method, sparsity=0.5, targets=[])


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_bad_ignore_regex_is_named(method):
    with pytest.raises(PrunekitError, match=r"ignore"):
        stage(method, sparsity=0.5, ignore=["re:("])


def test_imp_shares_the_layer_selection_rules():
    with pytest.raises(PrunekitError, match="targets is empty: omit it to target every Linear / Conv layer"):
        stage("imp", targets=[])
    with pytest.raises(PrunekitError, match="min_density"):
        stage("imp", min_density=1.5)
