"""Atomic writes: the one way cxrlib writes JSON, CSV and text files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib import files
from cxrlib.files import write_csv_atomic, write_json_atomic, write_text_atomic


def test_atomic_write_keeps_the_old_file_when_writing_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "record.json"
    write_json_atomic(target, {"version": 1})
    before = target.read_bytes()

    def broken_dump(obj, handle, **kwargs) -> None:
        handle.write('{"version": 2, "half')  # a crash half-way through
        raise OSError("disk full")

    monkeypatch.setattr(files.json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(target, {"version": 2})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]  # no temp file left


def test_atomic_write_converts_and_creates_folders(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "a" / "b.json",
                             {"x": np.float32(0.5), "n": np.int32(2), "bad": float("inf"),
                              "arr": np.arange(3), "path": tmp_path, "t": (1, 2)})
    assert json.loads(path.read_text()) == {"x": 0.5, "n": 2, "bad": None, "arr": [0, 1, 2],
                                            "path": str(tmp_path), "t": [1, 2]}


def test_csv_and_text_writes_replace_whole_files_and_keep_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("old")
    target.chmod(0o640)
    write_csv_atomic(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), target)
    assert pd.read_csv(target).to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}
    assert target.stat().st_mode & 0o777 == 0o640
    note = write_text_atomic(tmp_path / "new" / "note.md", "# hi\n")
    assert note.read_text() == "# hi\n" and note.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "table.csv"]
