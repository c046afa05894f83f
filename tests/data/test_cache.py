"""Cache: location, atomic writes, manifest contents, checksum and recipe verification."""

from __future__ import annotations

import json

import pytest

from prunekit.data import cache
from prunekit.data.cache import CacheWarning
from prunekit.errors import PrunekitError

RECIPE = {"lr": 0.1, "widths": [4, 8], "seed": 0}


def _produce(folder):
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text("{}")
    return {"metrics": {"acc": 0.5}}


def test_cache_root_honours_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(tmp_path / "x"))
    assert cache.cache_root() == tmp_path / "x"
    monkeypatch.delenv("PRUNEKIT_CACHE_DIR")
    assert cache.cache_root().name == "prunekit"


def test_write_then_verify_round_trip(_private_cache):
    folder = cache.write_artefact("thing", _produce, {"recipe": RECIPE, "data": {"dataset": "d"}})
    assert folder == _private_cache / "thing"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["model.safetensors"] == cache.sha256_file(folder / "model.safetensors")
    assert set(manifest["files"]) == {"model.safetensors", "sub/config.json"}
    assert manifest["recipe"] == RECIPE and manifest["metrics"] == {"acc": 0.5}
    assert {"prunekit", "torch", "python"} <= set(manifest["versions"])
    assert cache.verify_artefact("thing", RECIPE) == manifest
    assert [p.name for p in _private_cache.iterdir()] == ["thing"]  # no temp folders left


def test_missing_artefact_is_silently_absent():
    assert cache.verify_artefact("never-built", RECIPE) is None


def test_checksum_mismatch_warns_and_rejects():
    folder = cache.write_artefact("thing", _produce, {"recipe": RECIPE})
    (folder / "model.safetensors").write_bytes(b"weightZ")
    with pytest.warns(CacheWarning, match=r"checksum mismatch for model.safetensors; rebuilding it"):
        assert cache.verify_artefact("thing", RECIPE) is None


def test_missing_file_and_bad_manifest_warn():
    folder = cache.write_artefact("thing", _produce, {"recipe": RECIPE})
    (folder / "sub" / "config.json").unlink()
    with pytest.warns(CacheWarning, match=r"missing file sub/config.json"):
        assert cache.verify_artefact("thing", RECIPE) is None
    (folder / "manifest.json").write_text("{not json")
    with pytest.warns(CacheWarning, match=r"unreadable manifest"):
        assert cache.verify_artefact("thing", RECIPE) is None


def test_other_recipe_is_rejected():
    cache.write_artefact("thing", _produce, {"recipe": RECIPE})
    with pytest.warns(CacheWarning, match=r"trained with a different recipe"):
        assert cache.verify_artefact("thing", {**RECIPE, "lr": 0.2}) is None


def test_failed_write_leaves_no_partial_folder(_private_cache):
    def crash(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        cache.write_artefact("thing", crash, {"recipe": RECIPE})
    assert list(_private_cache.iterdir()) == []


def test_failed_rewrite_keeps_the_old_artefact(_private_cache):
    cache.write_artefact("thing", _produce, {"recipe": RECIPE})
    with pytest.raises(RuntimeError):
        cache.write_artefact("thing", lambda f: (_ for _ in ()).throw(RuntimeError("boom")), {"recipe": RECIPE})
    assert cache.verify_artefact("thing", RECIPE) is not None
    assert [p.name for p in _private_cache.iterdir()] == ["thing"]


def test_rewrite_replaces_atomically(_private_cache):
    cache.write_artefact("thing", _produce, {"recipe": RECIPE})

    def produce2(folder):
        (folder / "model.safetensors").write_bytes(b"new weights")
        return {}

    folder = cache.write_artefact("thing", produce2, {"recipe": RECIPE})
    assert (folder / "model.safetensors").read_bytes() == b"new weights"
    assert not (folder / "sub").exists()
    assert [p.name for p in _private_cache.iterdir()] == ["thing"]


def test_invalid_names_and_empty_artefacts():
    with pytest.raises(PrunekitError, match=r"invalid cache artefact name '../x'"):
        cache.artefact_dir("../x")
    with pytest.raises(RuntimeError, match="wrote no files"):
        cache.write_artefact("empty", lambda f: {}, {"recipe": RECIPE})


def test_recipe_digest_is_order_independent():
    assert cache.recipe_digest({"a": 1, "b": 2}) == cache.recipe_digest({"b": 2, "a": 1})
    assert cache.recipe_digest({"a": 1}) != cache.recipe_digest({"a": 2})


def test_stale_temp_folders_are_cleaned(_private_cache):
    import os

    stale = _private_cache / ".thing.tmp-deadbeef"
    stale.mkdir(parents=True)
    os.utime(stale, (0, 0))
    fresh = _private_cache / ".other.tmp-cafe"  # a live writer's folder is left alone
    fresh.mkdir()
    cache.write_artefact("thing", _produce, {"recipe": RECIPE})
    assert not stale.exists() and fresh.exists()
