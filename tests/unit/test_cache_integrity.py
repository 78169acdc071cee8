"""Cached targets and references are checked before use: a corrupted, edited, swapped or pickled
entry is rebuilt (with a warning), never used."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambda_hat.targets import store

SPEC = {"k": 1}


def _build(value: float = 1.0) -> Any:
    return lambda: ({"a": np.full(3, value), "b": np.arange(4)}, {"kind": "test"})


def _entry(cache: Path) -> Path:
    return cache / "targets" / store.target_id(SPEC)


def _truncate(entry: Path) -> None:
    data = (entry / "arrays.npz").read_bytes()
    (entry / "arrays.npz").write_bytes(data[: len(data) // 2])


def _edit_values(entry: Path) -> None:  # a valid npz with other numbers: only the hash tells
    np.savez(entry / "arrays.npz", a=np.full(3, 9.0), b=np.arange(4))


def _pickled(entry: Path) -> None:  # an object array: np.load(allow_pickle=False) refuses it
    np.savez(entry / "arrays.npz", a=np.array([{"x": 1}, None], dtype=object), b=np.arange(4))


def _other_spec(entry: Path) -> None:  # another target's entry under this id
    meta = json.loads((entry / "meta.json").read_text())
    meta["spec"] = {"k": 2}
    (entry / "meta.json").write_text(json.dumps(meta))


def _no_hash(entry: Path) -> None:  # an entry from before hashes were recorded
    meta = json.loads((entry / "meta.json").read_text())
    del meta["arrays_sha256"]
    (entry / "meta.json").write_text(json.dumps(meta))


def _bad_meta(entry: Path) -> None:
    (entry / "meta.json").write_text('{"target_id": ')


def _not_a_zip(entry: Path) -> None:
    (entry / "arrays.npz").write_bytes(b"garbage")


@pytest.mark.parametrize("corrupt", [_truncate, _edit_values, _pickled, _other_spec, _no_hash, _bad_meta, _not_a_zip])
def test_a_bad_target_entry_is_rebuilt_never_used(tmp_path: Path, corrupt: Any, caplog: Any) -> None:
    store.get_or_build(tmp_path, SPEC, _build(1.0))
    corrupt(_entry(tmp_path))
    with caplog.at_level(logging.WARNING, logger="lambda_hat.targets.store"):
        _, arrays, meta, cached = store.get_or_build(tmp_path, SPEC, _build(2.0))
    assert not cached and arrays["a"].tolist() == [2.0, 2.0, 2.0]  # the rebuild's, not the bad entry's
    assert "rebuilding" in caplog.text and str(_entry(tmp_path)) in caplog.text
    if corrupt is _no_hash:  # says why, rather than calling the missing hash a mismatch
        assert "records no sha256" in caplog.text
    again = store.get_or_build(tmp_path, SPEC, _build(3.0))
    assert again[3] and again[1]["a"].tolist() == [2.0, 2.0, 2.0]  # the rebuilt entry is reused
    assert again[2]["arrays_sha256"] == store.arrays_sha256(again[1])


def test_target_entries_are_plain_npz_and_json(tmp_path: Path) -> None:
    store.get_or_build(tmp_path, SPEC, _build())
    with zipfile.ZipFile(_entry(tmp_path) / "arrays.npz") as z:
        for name in z.namelist():
            assert not z.read(name).startswith(b"\x80")  # no pickle stream inside
    meta = json.loads((_entry(tmp_path) / "meta.json").read_text())
    assert meta["spec"] == SPEC and len(meta["arrays_sha256"]) == 64


# ---------------------------------------------------------------- references


def _reference_cfg(cache: Path) -> Any:
    from lambda_hat.composition import compose_config

    return compose_config(["model=mlp", "model.widths=[2,3,1]", f"cache_dir={cache}", "objective.reference.num_steps=50"])


@pytest.fixture
def fake_reference_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from lambda_hat.sweeps import references

    builds: list[int] = []

    def fake_run(ref_cfg: Any, run_dir: Path) -> dict[str, Any]:
        builds.append(1)
        run_dir.mkdir(parents=True)
        return {"target_id": "t0", "llc_mean": 3.0, "llc_sem": 0.1, "ess_bulk": 900.0, "r_hat": 1.0, "status": "ok"}

    monkeypatch.setattr(references, "run_reference", fake_run)
    return builds


def _set_llc(path: Path) -> None:  # valid JSON, plausible value: only the recorded hash tells
    ref = json.loads(path.read_text())
    ref["llc"] = 2.5
    path.write_text(json.dumps(ref))


def _swap_key(path: Path) -> None:  # another reference's record, its hash recomputed
    from lambda_hat.sweeps.references import record_sha256

    ref = json.loads(path.read_text())
    ref["key"] = "0" * 16
    ref["sha256"] = record_sha256(ref)
    path.write_text(json.dumps(ref))


def test_a_bad_reference_is_rebuilt_never_used(tmp_path: Path, fake_reference_run: list[int]) -> None:
    from lambda_hat.sweeps.references import get_reference

    cfg = _reference_cfg(tmp_path)
    first = get_reference(cfg, target_id="t0", llc_true=None)
    assert fake_reference_run == [1] and first["llc"] == 3.0
    path = Path(first["path"]) / "reference.json"
    torn = lambda p: p.write_text('{"format": 2, "key": "')  # noqa: E731
    for i, corrupt in enumerate([_set_llc, _swap_key, torn, Path.unlink], start=2):
        corrupt(path)
        again = get_reference(cfg, target_id="t0", llc_true=None)
        assert len(fake_reference_run) == i and again["llc"] == 3.0 and again["key"] == first["key"], corrupt
    reused = get_reference(cfg, target_id="t0", llc_true=None)
    assert len(fake_reference_run) == 5 and reused["llc"] == 3.0  # reused once rebuilt
