"""The cache of cxrlib's pretrained backbones (:mod:`cxrlib.runs.pretrain` trains them): the
entries' names, what their JSON states and how it is checked, the locks, the source films kept
once per size, and saving an entry.

The backbone, without its head, is saved as ``<cache>/<backbone>-<size>px-<task>-<recipe>-seed<seed>
.weights.h5`` with a JSON beside it saying how it was made, the weights file's size and its
sha256. That name is the standard budget's (:data:`PRETRAIN_IMAGES` films, :data:`PRETRAIN_EPOCHS`
epochs, batch :data:`PRETRAIN_BATCH`), the one ``weights="synthetic"`` loads; other settings add
``-n<films>-e<epochs>-b<batch>`` to it. The cache folder is
``$CXR_PRETRAINED_DIR``, else ``$XDG_CACHE_HOME/cxrlib/pretrained`` (``~/.cache/...``).

Nothing in the cache is trusted as it is: an entry is used only when its JSON states the
settings asked for and the weights file's size and sha256 match it (:func:`entry_problem`).
``cxr pretrain`` rebuilds an entry that fails, saying why; ``train`` refuses it with the
command that rebuilds it. Each entry (and each films file) is locked while it is checked and
written (``.<name>.lock``: a second process waits, then finds it cached), every file goes
through a temporary file beside it (:func:`cxrlib.files.replacing`), and the temporary files a
killed run left behind are removed by the next run that holds the lock. A full disk is one
line naming the folder, and leaves no entry behind.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from cxrlib.backbones import get_backbone
from cxrlib.errors import UserError
from cxrlib.files import read_json, replacing, sha256_file, write_json_atomic, write_npz_atomic
from cxrlib.text import one_line

#: Default pretraining budget (timings on 2 CPU cores: see the README).
PRETRAIN_IMAGES = 1200
PRETRAIN_EPOCHS = 3
PRETRAIN_BATCH = 16   # more, smaller steps in the same budget: at 64 px a linear probe of
                      # DenseNet121's features scored 0.87 (batch 32), 0.92 (16), 0.94 (8; 1.25x time)
#: Part of the cache key: bumped whenever pretraining changes what it saves (r2: precise BN,
#: batch 16; r3: weight averaging, VGG16 trained with BatchNorm, folded in afterwards),
#: so that weights made the old way are not reused.
PRETRAIN_RECIPE = "r3"


def cache_dir() -> Path:
    """Where pretrained weights live: ``$CXR_PRETRAINED_DIR`` or the user's cache folder."""
    from cxrlib.environment import user_folder

    return user_folder("CXR_PRETRAINED_DIR", "pretrained")


def is_standard(n_images: int, epochs: int, batch_size: int) -> bool:
    """Whether these are the standard budget's settings (those ``weights="synthetic"`` loads)."""
    return (n_images, epochs, batch_size) == (PRETRAIN_IMAGES, PRETRAIN_EPOCHS, PRETRAIN_BATCH)


def weights_path(backbone: str, image_size: int, seed: int = 0, cache: str | Path | None = None,
                 n_images: int = PRETRAIN_IMAGES, epochs: int = PRETRAIN_EPOCHS,
                 batch_size: int = PRETRAIN_BATCH) -> Path:
    """The cache file of one pretrained backbone (the key: backbone, size, task version, seed;
    settings other than the standard budget's add ``-n<films>-e<epochs>-b<batch>``)."""
    from cxrlib.data.source_task import SOURCE_TASK

    name = get_backbone(backbone).name
    budget = "" if is_standard(n_images, epochs, batch_size) else f"-n{n_images}-e{epochs}-b{batch_size}"
    return Path(cache or cache_dir()) / (f"{name}-{int(image_size)}px-{SOURCE_TASK}-{PRETRAIN_RECIPE}"
                                         f"-seed{seed}{budget}.weights.h5")


def info_path(weights_file: str | Path) -> Path:
    """The JSON that describes a weights file (``x.weights.h5`` → ``x.json``)."""
    path = Path(weights_file)
    return path.with_name(path.name.removesuffix(".weights.h5") + ".json")


def entry_info(backbone: str, image_size: int, seed: int = 0, n_images: int = PRETRAIN_IMAGES,
               epochs: int = PRETRAIN_EPOCHS, batch_size: int = PRETRAIN_BATCH) -> dict:
    """What the JSON of a cache entry states about how it was made: each of these is checked
    on load (:func:`entry_problem`)."""
    from cxrlib.data.source_task import SOURCE_LABELS, SOURCE_TASK

    return {"backbone": get_backbone(backbone).name, "image_size": int(image_size),
            "source_task": {"name": SOURCE_TASK, "labels": list(SOURCE_LABELS),
                            # the name it was first recorded under (now cxrlib.data.source_task):
                            # part of every cache entry's key, kept so that cached weights stay valid
                            "generator": "cxrlib.data.synthetic.render_source_film",
                            "loss": "binary cross-entropy (multi-label)"},
            "images": int(n_images), "epochs": int(epochs), "batch_size": int(batch_size),
            "seed": int(seed), "recipe": PRETRAIN_RECIPE}


def _short(value: object) -> str:
    """A value of a JSON as a short text, for a message."""
    return one_line(repr(value), 40)


def entry_problem(weights_file: str | Path, expected: dict) -> str | None:
    """Why the cache entry ``weights_file`` cannot be used, or None when it can: both files
    there, the JSON readable, stating what ``expected`` states (:func:`entry_info`; ``{}``
    checks only the files), and the weights file of the size and sha256 the JSON records."""
    path = Path(weights_file)
    info_file = info_path(path)
    if not path.is_file():
        return f"its weights file {path.name} is missing"
    if not info_file.is_file():
        return f"its JSON {info_file.name} is missing (an interrupted pretraining?)"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return f"its JSON {info_file.name} is not readable JSON"
    if not isinstance(info, dict):
        return f"its JSON {info_file.name} is not a JSON object"
    wrong = [f"{key} {_short(info.get(key))} (not {_short(value)})" for key, value in expected.items()
             if type(info.get(key)) is not type(value) or info.get(key) != value]
    if wrong:
        return f"its JSON {info_file.name} says {', '.join(wrong)}"
    if info.get("weights_file") != path.name or not isinstance(info.get("sha256"), str):
        return (f"its JSON {info_file.name} does not record this weights file's name and sha256 "
                "(made by another or an older cxrlib?)")
    size = path.stat().st_size
    if info.get("weights_bytes") != size:
        return (f"its weights file has {size} bytes, its JSON records {info.get('weights_bytes')!r} "
                "(truncated or replaced)")
    if sha256_file(path) != info["sha256"]:
        return "its weights file's sha256 is not the one its JSON records (damaged or replaced)"
    return None


def _stem(path: Path) -> str:
    """A cache file's name without its extension (``x.weights.h5`` → ``x``, ``x.npz`` → ``x``)."""
    return path.name.removesuffix(".weights.h5").removesuffix(".npz")


def _lock_file(path: Path) -> Path:
    """The lock of one cache file: ``.<stem>.lock`` beside it."""
    return path.with_name(f".{_stem(path)}.lock")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock of the cache file ``path`` while the block runs; when another process
    holds it, say so and wait for it (the lock goes with its process, even on ``kill -9``)."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(_lock_file(path)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Another process is writing {path.name} in {path.parent}: waiting for it.", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files (``.<stem>.*``) that an interrupted write of the cache file
    ``path`` or its JSON left; called with its lock held, so no live process is writing them."""
    for leftover in path.parent.glob(f".{glob.escape(_stem(path))}.*"):
        if leftover != _lock_file(path) and leftover.is_file():
            leftover.unlink(missing_ok=True)
            print(f"Removed {leftover}, a partial file left by an interrupted pretraining.", flush=True)


@contextlib.contextmanager
def no_space_is_one_line(folder: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) inside the block into one UserError naming ``folder``."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(f"No space left on the disk of {folder}: nothing was cached. Free some "
                        "space there, or point --cache (CXR_PRETRAINED_DIR) at a folder on "
                        "another disk.") from None


def check_space(folder: Path, needed: int, what: str) -> None:
    """Refuse, before the work, to write ``needed`` bytes in ``folder`` when it has less free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"Not enough space in {folder} for {what}: about {needed / 1e6:.0f} MB "
                        f"needed, {free / 1e6:.0f} MB free. Free some space there, or point "
                        "--cache (CXR_PRETRAINED_DIR) at a folder on another disk.")


def films_path(n: int, image_size: int, seed: int, cache: Path) -> Path:
    """The cache file of the source-task films of one (size, seed, n)."""
    from cxrlib.data.source_task import SOURCE_TASK

    return cache / f"films-{SOURCE_TASK}-{image_size}px-seed{seed}-n{n}.npz"


def _read_films(path: Path, n: int, image_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The films cached in ``path``; None when there is no such file, or (said) when it cannot
    be read or holds other films than ``n`` at ``image_size``."""
    from cxrlib.data.source_task import SOURCE_LABELS

    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        reason = f"{type(error).__name__}: {one_line(error, 120, first_line=True)}"
    else:
        if (images.shape == (n, image_size, image_size) and images.dtype == np.uint8
                and labels.shape == (n, len(SOURCE_LABELS))):
            return images, labels
        reason = f"it holds images {images.shape} and labels {labels.shape}"
    print(f"The cached films file {path} cannot be used ({reason}): generating the films again.",
          flush=True)
    return None


def source_films(n: int, image_size: int, seed: int, cache: Path, progress: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The source-task films, generated once per (size, seed, n) and kept in the cache (a file
    that cannot be read is generated again)."""
    from cxrlib.data.source_task import SOURCE_LABELS, source_task_arrays

    path = films_path(n, image_size, seed, cache)
    with locked(path):
        remove_stale_temporaries(path)
        films = _read_films(path, n, image_size)
        if films is not None:
            return films
        check_space(cache, n * (image_size ** 2 + 4 * len(SOURCE_LABELS)) + 2**20, f"{n} films")
        images, labels = source_task_arrays(n, image_size, seed=seed, progress=progress)
        write_npz_atomic(path, {"images": images, "labels": labels}, compressed=True)
    return images, labels


def save_entry(base, target: Path, info: dict) -> Path:
    """Save ``base``'s weights as the cache entry ``target`` with its JSON (``info`` plus the
    weights file's name, size and sha256), each through a temporary file beside it.

    The JSON is renamed into place first, then the weights: a crash between the two leaves a
    JSON whose sha256 no weights file matches, which :func:`entry_problem` refuses.
    """
    with replacing(target, suffix=".tmp.weights.h5") as tmp:
        try:
            base.save_weights(tmp)
        except OSError:
            # a full disk: h5py still holds the file open and flushes it when it lets go;
            # without the room this frees, that flush fails again and the process segfaults
            os.truncate(tmp, 0)
            raise
        write_json_atomic(info_path(target), {**info, "weights_file": target.name,
                                              "weights_bytes": tmp.stat().st_size,
                                              "sha256": sha256_file(tmp)})
    return target


def rebuild_command(backbone: str, image_size: int, seed: int = 0) -> str:
    """The command that pretrains a standard cache entry again."""
    return (f"cxr pretrain --backbone {get_backbone(backbone).name} --image-size {image_size}"
            + (f" --seed {seed}" if seed else "") + " --force")


def describe(weights_file: str | Path) -> dict:
    """The JSON written beside a pretrained weights file ({} when there is none)."""
    return read_json(info_path(weights_file))
