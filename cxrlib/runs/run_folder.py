"""A run's folder: its key, its lock, its staging and its publication.

The run works in ``RUN_DIR/.partial`` (:data:`PARTIAL`) while ``RUN_DIR/.lock`` (:data:`LOCK_FILE`)
is held, and moves into ``RUN_DIR`` only once its record is written (:func:`publish_run`). A
finished run whose configuration key (:func:`config_key`) matches is reused
(:func:`finished_run`); an interrupted one resumes only with the same key. Under a
multi-worker strategy :func:`join_run` makes the group agree before the run starts
(:mod:`cxrlib.runs.distributed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from cxrlib.errors import InputError
from cxrlib.files import read_json, write_json_atomic
from cxrlib.runs.distributed import Role, share, worker_dir

if TYPE_CHECKING:
    from cxrlib.runs.records import RunRecord

PARTIAL = ".partial"
LOCK_FILE = ".lock"
# what a finished run leaves in RUN_DIR besides record.json (written last)
ARTIFACTS = ("model.keras", "history.csv", "split.csv", "features.npz", "tensorboard")


class RunFolderError(InputError):
    """A run folder that cannot be used as asked: a file, locked, or an interrupted other run."""


def data_fingerprint(manifest: pd.DataFrame) -> list:
    """(path, split, size, mtime) per image: a regenerated file changes the run's key."""
    def stat(path: str) -> tuple[int, int]:
        try:
            info = Path(path).stat()
            return info.st_size, info.st_mtime_ns
        except OSError:
            return -1, -1
    return sorted((p, s, *stat(p)) for p, s in zip(manifest["path"], manifest["split"]))


def fingerprint_file(path: str) -> list:
    """Size and mtime of a file (a weights file): a re-pretrained file changes the run's key."""
    return data_fingerprint(pd.DataFrame({"path": [path], "split": [""]}))


def config_key(config: dict) -> str:
    """A short stable hash of a run's configuration (to reuse a finished identical run)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_run(out: Path, key: str) -> RunRecord | None:
    """The record of the finished run in ``out`` when its configuration key is ``key``."""
    from cxrlib.runs import records

    if not (out / "record.json").is_file() or not (out / "model.keras").is_file():
        return None
    try:
        existing = records.read_record(out)
    except ValueError:
        return None
    return existing if existing.config_key == key else None


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold ``out/.lock`` while a run works in ``out`` (a ``filelock`` lock, which goes with its
    process, even on ``kill -9``; the file holds pid, host and start time, and is removed on
    release). A folder another live run holds raises :class:`RunFolderError` naming it."""
    from filelock import FileLock, Timeout

    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": pd.Timestamp.now(tz="UTC").isoformat()}).encode()

    def sign(fd: int) -> None:
        os.ftruncate(fd, 0)   # a killed holder's note, if any
        os.pwrite(fd, mine, 0)

    lock = FileLock(path, timeout=0, on_acquired=sign)
    try:
        lock.acquire()
    except Timeout:
        holder = read_json(path)
        raise RunFolderError(
            f"{out} is in use by another run (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, since {holder.get('started', '?')}); wait for it to "
            "finish, or choose another --out.") from None
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)   # while held: filelock retries an acquirer that got the unlinked file
        lock.release()


def _plain(config: dict) -> dict:
    """A configuration as ``config.json`` holds it (tuples as lists, other objects as strings)."""
    return json.loads(json.dumps(config, default=str))


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Names of the settings that differ between two configurations (nested keys dotted)."""
    names = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            names += _changed(a, b, f"{prefix}{name}.")
        elif a != b:
            names.append(f"{prefix}{name} {a!r} → {b!r}")
    return names


def _staging(out: Path, key: str, config: dict, fresh: bool) -> Path:
    """The folder the run works in: ``out/.partial``, resumed when its configuration matches.

    An interrupted run with another configuration raises :class:`RunFolderError` unless
    ``fresh``, which discards it.
    """
    work = out / PARTIAL
    meta = work / "config.json"
    if work.is_dir():
        previous = read_json(meta)
        if fresh or not (work / "backup").is_dir():
            shutil.rmtree(work)
        elif previous.get("config_key") != key:
            now = _plain(config)
            changes = _changed(previous.get("config", {}), now) or ["the data or its split"]
            raise RunFolderError(
                f"{out} holds an interrupted run with another configuration "
                f"({'; '.join(changes[:3])}); rerun with its settings to resume it, or add "
                "--force to discard it and start this one.")
    work.mkdir(parents=True, exist_ok=True)
    if not meta.is_file():
        write_json_atomic(meta, {"config_key": key, "config": _plain(config)})
    return work


def _worker_staging(work: Path, key: str, config: dict, fresh: bool) -> Path:
    """A non-chief worker's folder (:func:`cxrlib.runs.distributed.worker_dir`): kept when it
    holds this configuration's interrupted run, emptied otherwise."""
    if work.is_dir() and (fresh or read_json(work / "config.json").get("config_key") != key):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "config.json").is_file():
        write_json_atomic(work / "config.json", {"config_key": key, "config": _plain(config)})
    return work


def _backup_epoch(backup: Path) -> int:
    """The epoch an interrupted fit resumes at (BackupAndRestore's metadata; 0 for none)."""
    epoch = read_json(backup / "training_metadata.json").get("epoch", 0)
    return epoch if isinstance(epoch, int) and (backup / "latest.weights.h5").is_file() else 0


def join_run(distribution, role: Role, out: Path, key: str, config: dict, fresh: bool,
             held: contextlib.ExitStack, check: Callable[[Path], object] | None = None) -> Path:
    """The folder this process works in, once the group agrees that the run can start.

    The chief locks ``out`` (held until ``held`` closes) and stages ``out/.partial``; another
    worker stages its temporary folder and, where it sees the chief's (a shared disk), takes
    the chief's backup and history, so that the group resumes from one state. Two rounds of
    :func:`cxrlib.runs.distributed.share` then make sure that every worker starts, and at
    the same epoch: a worker whose start failed raises its own error, the others say so,
    instead of waiting for it in the first step. ``check`` is called on each worker's staged
    folder first (the chief's before any other worker copies from it).
    """
    work, failure = None, None
    try:
        if role.chief:
            held.enter_context(run_lock(out))
            work = _staging(out, key, config, fresh=fresh)
        else:
            work = _worker_staging(worker_dir(out, role), key, config, fresh=fresh)
        if check is not None:
            check(work)
    except Exception as error:  # noqa: BLE001 - the group hears of it, then it is raised
        failure = error
    if role.workers == 1:
        if failure is not None:
            raise failure
        return work
    rows = share(distribution, role, [failure is not None])
    if failure is not None:
        raise failure
    if any(failed for failed, in rows):
        raise RunFolderError(f"Another worker of the group could not start the run in {out} (its own "
                             f"output says why); this worker ({role.task}) stops too.")
    chief_work = out / PARTIAL
    if not role.chief and read_json(chief_work / "config.json").get("config_key") == key:
        shutil.rmtree(work / "backup", ignore_errors=True)   # a shared disk: the chief's state
        (work / "history.csv").unlink(missing_ok=True)
        if (chief_work / "backup").is_dir():
            shutil.copytree(chief_work / "backup", work / "backup")
        if (chief_work / "history.csv").is_file():
            shutil.copy2(chief_work / "history.csv", work / "history.csv")
    epochs = [int(epoch) for epoch, in share(distribution, role, [_backup_epoch(work / "backup")])]
    if len(set(epochs)) > 1:
        raise RunFolderError(
            f"The workers' saved training states disagree (the chief resumes at epoch {epochs[0]}, "
            f"the others at {epochs[1:]}): a worker lost its backup in "
            f"{worker_dir(out, role).parent}. Start every worker again with --force (a fresh run).")
    return work


def publish_run(work: Path, out: Path) -> None:
    """Move a finished run from ``work`` into ``out``, replacing the previous run's files.

    The old record goes first and the new one last, so ``out`` never pairs a record with
    another run's model; then ``work`` (backup state included) is removed. Only what the new
    run wrote replaces anything: a file in ``out`` the run did not write (a user's notes, in
    ``out`` or in ``out/tensorboard``) stays, and a folder is merged file by file.
    """
    (out / "record.json").unlink(missing_ok=True)
    for name in ARTIFACTS:
        source, target = work / name, out / name
        if source.is_dir():
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                destination = target / path.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, destination)
        elif source.exists():
            os.replace(source, target)
    os.replace(work / "record.json", out / "record.json")
    shutil.rmtree(work)
