"""Atomic writes: the one way cxrlib writes JSON, CSV and text files."""

from __future__ import annotations

import json
import re
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


#: Ways to write a file in place, each bypassing the temporary file and rename of files.py.
_IN_PLACE_WRITES = re.compile(r"""\b(?:open|fdopen)\([^)]*["'][wx]b?\+?["']|\.write_(?:text|bytes)\(|\bnp\.savez""")


def test_cxrlib_writes_files_only_through_files_py() -> None:
    package = Path(files.__file__).parent
    found = [f"{path.relative_to(package)}:{n}: {line.strip()}"
             for path in sorted(package.rglob("*.py")) if path != Path(files.__file__)
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if _IN_PLACE_WRITES.search(line) and not line.lstrip().startswith("#")]
    assert found == []
    assert _IN_PLACE_WRITES.search('with open(out / "markers.csv", "w", newline="") as f:')
    assert _IN_PLACE_WRITES.search("np.savez(cache, key=key)")
    assert not _IN_PLACE_WRITES.search('with open(path, "rb") as handle:')


def test_npz_and_json_round_trip(tmp_path: Path) -> None:
    arrays = {"images": np.arange(6, dtype=np.uint8).reshape(2, 3), "key": np.array("abc")}
    for compressed in (False, True):
        path = files.write_npz_atomic(tmp_path / f"a{compressed}.npz", arrays, compressed=compressed)
        with np.load(path) as loaded:
            assert sorted(loaded) == ["images", "key"]
            np.testing.assert_array_equal(loaded["images"], arrays["images"])
            assert str(loaded["key"]) == "abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aFalse.npz", "aTrue.npz"]
    write_json_atomic(tmp_path / "ok.json", {"a": 1})
    (tmp_path / "half.json").write_text('{"a": ', encoding="utf-8")
    (tmp_path / "list.json").write_text("[1]", encoding="utf-8")
    assert files.read_json(tmp_path / "ok.json") == {"a": 1}
    assert [files.read_json(tmp_path / name) for name in ("half.json", "list.json", "none.json")] == [{}, {}, {}]
