"""Target selection by name and re: pattern, protections, ties, and error text."""

from __future__ import annotations

import pytest
from torch import nn

from prunekit.config.targets import match_name, select_targets
from prunekit.errors import PrunekitError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
        self.classifier = nn.Linear(4, 3)


def test_match_name():
    assert match_name("body.0", "body.0")
    assert not match_name("body", "body.0")
    assert match_name("re:body\\..*", "body.0")
    assert not match_name("re:body", "body.0")  # full match, not search


def test_default_targets_everything_prunable_and_records_protections():
    sel = select_targets(Net(), None, protected={"stem": "first layer"})
    assert sel.targeted == ["body.0", "body.2", "classifier"]
    assert sel.skipped == {"stem": "first layer"}


def test_ignore_and_targets_regex():
    sel = select_targets(Net(), ["re:body\\..*"], ["body.2"])
    assert sel.targeted == ["body.0"]
    assert sel.skipped["body.2"] == "ignored by 'body.2'"
    assert sel.skipped["classifier"] == "not matched by targets"


def test_zero_matches_is_error_with_suggestion():
    with pytest.raises(PrunekitError, match=r"'clasifier' matches no module\. Did you mean: classifier"):
        select_targets(Net(), ["clasifier"])


def test_bad_regex_is_error():
    with pytest.raises(PrunekitError, match="not a valid regular expression"):
        select_targets(Net(), ["re:(("])


def test_nothing_left_is_error():
    with pytest.raises(PrunekitError, match="no layer left to prune"):
        select_targets(Net(), None, ["re:.*"])


def test_non_prunable_target_named_exactly_is_reported():
    sel = select_targets(Net(), ["body.1", "body.0"])
    assert sel.skipped["body.1"] == "BatchNorm2d is not a prunable layer type"
    with pytest.raises(PrunekitError, match="target 'body.1': BatchNorm2d is not a prunable layer type"):
        select_targets(Net(), ["body.1", "body.0"], strict=True)


def test_strict_turns_protection_into_error():
    with pytest.raises(PrunekitError, match="strict: layer 'stem' matched by targets is skipped: first layer"):
        select_targets(Net(), None, protected={"stem": "first layer"}, strict=True)


def test_tied_weights_are_skipped():
    m = nn.Module()
    m.a = nn.Linear(4, 4)
    m.b = nn.Linear(4, 4)
    m.b.weight = m.a.weight
    m.c = nn.Linear(4, 4)
    sel = select_targets(m, None)
    assert sel.targeted == ["c"]
    assert sel.skipped["a"] == "weight tied with b"
