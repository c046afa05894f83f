"""`python -m prunekit.data`: argument handling (building the real artefacts is what the slow tests cover)."""

from __future__ import annotations

import pytest

from prunekit.data.__main__ import ARTEFACTS, main


def test_lists_the_three_artefacts():
    assert list(ARTEFACTS) == ["digits_cnn", "mnist1d_cnn", "tiny_llama"]


def test_unknown_artefact_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tiny_lama"])
    assert exc.value.code == 2
    assert "unknown artefact 'tiny_lama'; valid: digits_cnn, mnist1d_cnn, tiny_llama" in capsys.readouterr().err
