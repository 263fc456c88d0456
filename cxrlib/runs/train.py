"""Training: one function, :func:`train`, behind the notebooks and ``cxr train``.

A run directory holds everything a run produced::

    RUN_DIR/model.keras    the best model (lowest validation loss), loadable with safe_mode
    RUN_DIR/record.json    the machine-readable record: data, model, every hyper-parameter,
                           versions, device, per-epoch history, test metrics
    RUN_DIR/history.csv    the per-epoch log (CSVLogger; survives a crash)
    RUN_DIR/split.csv      the exact images of each split
    RUN_DIR/.partial/      the run in progress (model, history, split, BackupAndRestore state
                           in ``backup/``, its configuration in ``config.json``); moved into
                           RUN_DIR only once the run has finished and its record is written
    RUN_DIR/.lock          held while a run works in the folder (filelock; pid, host, start time)

Under a multi-worker strategy only the chief writes there; every other worker works in a
temporary folder of its own (:mod:`cxrlib.runs.distributed`).

A finished run with the same configuration is reused, not retrained, so notebooks can share
one results directory (``04`` and ``06`` reuse what ``03`` trained). Every argument is checked
and the model is built before the folder is touched; a finished run is replaced only when
the new one has finished. An interrupted run resumes only with the same configuration;
``reuse=False`` (``--force``) discards it instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cxrlib.data.pipeline import Prep, make_dataset, with_crop_reference, with_norm_stats
from cxrlib.data.splits import class_weights as balanced_weights
from cxrlib.data.splits import save_split, subset
from cxrlib.environment import environment_info
from cxrlib.errors import InputError
from cxrlib.files import read_json, write_json_atomic, write_npz_atomic
from cxrlib.models.backbones import SCRATCH, default_size, min_input_size
from cxrlib.models.variants import get_variant
from cxrlib.runs.backup import discard_broken_backup, disk_full_is_one_line
from cxrlib.runs.distributed import Role, share, worker_dir, worker_role
from cxrlib.runs.evaluate import evaluate
from cxrlib.runs.pretrain import weights_source
from cxrlib.spec import RunSpec

log = logging.getLogger(__name__)

PARTIAL = ".partial"
LOCK_FILE = ".lock"
# what a finished run leaves in RUN_DIR besides record.json (written last)
ARTIFACTS = ("model.keras", "history.csv", "split.csv", "features.npz", "tensorboard")


class RunFolderError(InputError):
    """A run folder that cannot be used as asked: a file, locked, or an interrupted other run."""


def run_dir(results_dir: str | Path, backbone: str, variant: str) -> Path:
    """Where a run lives in a shared results directory: ``RESULTS/<backbone>-<variant>``.

    Aliases share a directory (``frozen`` is ``v2reg``, ``finetune`` is ``v3``), so a
    notebook that asks for DenseNet121 ``frozen`` finds the V2-reg run another one trained.
    """
    return Path(results_dir) / f"{backbone}-{get_variant(variant).name}"


def _epoch_bar(epochs: int):
    """tqdm's Keras callback: one bar over epochs (a resumed run starts at its epoch)."""
    from tqdm.keras import TqdmCallback

    return TqdmCallback(epochs=epochs, verbose=0)


def read_history(path: Path) -> dict[str, list[float]]:
    """The per-epoch history from a CSVLogger file (all epochs, across resumes)."""
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return {c: [float(v) for v in frame[c]] for c in frame.columns if c not in ("epoch",)}


def data_fingerprint(manifest: pd.DataFrame) -> list:
    """(path, split, size, mtime) per image: a regenerated file changes the run's key."""
    def stat(path: str) -> tuple[int, int]:
        try:
            info = Path(path).stat()
            return info.st_size, info.st_mtime_ns
        except OSError:
            return -1, -1
    return sorted((p, s, *stat(p)) for p, s in zip(manifest["path"], manifest["split"]))


def _fingerprint_file(path: str) -> list:
    """Size and mtime of a file (a weights file): a re-pretrained file changes the run's key."""
    return data_fingerprint(pd.DataFrame({"path": [path], "split": [""]}))


def config_key(config: dict) -> str:
    """A short stable hash of a run's configuration (to reuse a finished identical run)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _strategy(strategy):
    """None → the default strategy; "mirrored" → MirroredStrategy; "multiworker" → a
    MultiWorkerMirroredStrategy for ``TF_CONFIG``'s cluster, once every other worker answers
    (:func:`cxrlib.runs.distributed.multiworker_strategy`); or a strategy object."""
    import tensorflow as tf

    from cxrlib.runs.distributed import keras_ready, multiworker_strategy

    if strategy is None:
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multiworker":
        return multiworker_strategy()
    if isinstance(strategy, str):
        raise InputError(f"Unknown strategy {strategy!r}; use 'mirrored', 'multiworker' or a "
                         "tf.distribute strategy object.")
    return keras_ready(strategy)


def strategy_name(strategy) -> str | None:
    """How the record names a strategy: None (the default), ``"mirrored"``, ``"multiworker"``,
    or the class name of another strategy object (stable across processes, unlike its repr)."""
    if strategy is None or isinstance(strategy, str):
        return strategy
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    return type(strategy).__name__


def train(manifest: pd.DataFrame, classes: Sequence[str], spec: RunSpec, out_dir: str | Path, *,
          name: str | None = None, dataset_info: dict | None = None, reuse: bool = True,
          progress: bool = True, callbacks: Sequence = (), bootstrap: int = 1000,
          strategy=None, mixed_precision: bool = False, xla: bool = False,
          run_eagerly: bool = False, tensorboard: bool = False) -> dict:
    """Train ``spec`` on the ``train`` split of ``manifest``; return the run's record.

    ``spec`` (:class:`cxrlib.spec.RunSpec`) is everything the run is; the record stores it as
    it is. The manifest must carry a ``split`` column (made as ``spec.split`` says, by
    :func:`cxrlib.data.splits.prepare_split` or a course's data recipe). The run validates on
    ``val``, keeps the best model (``spec.keep_best``; else the last epoch's), and scores it on
    ``test``; everything lands in ``out_dir``.

    The keyword options change how the run is computed, not what it is: ``strategy``
    (None, ``"mirrored"``, ``"multiworker"`` or a strategy object), ``mixed_precision``,
    ``xla``, ``run_eagerly`` (skips graph tracing: only worth it for a handful of steps),
    ``tensorboard``, ``progress``, extra Keras ``callbacks``, and ``bootstrap`` resamples for
    the test intervals. Every setting is checked before anything is written; an impossible
    one raises ValueError.

    ``spec.batch_size`` is the **global** batch, whatever the strategy: each step takes that
    many images, split among the replicas (every device of every worker), so a spec trains
    with the same batch on one machine or several. Under ``"multiworker"`` every worker calls
    ``train`` with the same arguments (:mod:`cxrlib.runs.distributed` says who writes what):
    the chief returns the record it wrote; any other worker writes nowhere but a temporary
    folder it removes, and returns its own account of the run without test scores (where the
    chief reused a finished run: that run's record if this worker can read it, else ``{}``).
    ``record["runtime"]`` names the strategy, the workers, the replicas and the batches.
    """
    import keras

    from cxrlib.models import build as models
    from cxrlib.runs import records

    if not isinstance(spec, RunSpec):
        raise TypeError(f"train() takes a RunSpec (cxrlib.spec), not {type(spec).__name__}; "
                        "build one with cxrlib.spec.variant_spec(backbone, variant, ...).")
    out = Path(out_dir)
    backbone, recipe = spec.backbone, get_variant(spec.variant)
    image_size = default_size(backbone) if spec.image_size is None else spec.image_size
    epochs = 0 if recipe.training == "none" else spec.epochs
    if backbone == SCRATCH and spec.weights is not None:
        raise InputError("The from-scratch CNN has no pretrained weights; drop --weights "
                         "or give --weights none.")
    train_df, val_df, test_df = (subset(manifest, s) for s in ("train", "val", "test"))
    check_arguments(spec, classes, train_df, out, image_size=image_size, epochs=epochs)
    distribution = _strategy(strategy)   # before any TensorFlow op (a multi-worker one must be)
    role = worker_role(distribution)
    if spec.batch_size % role.workers:
        raise InputError(f"The batch size ({spec.batch_size}) is the global batch, split among the "
                         f"{role.workers} workers: give a multiple of {role.workers}.")
    prep = with_crop_reference(Prep(image_size=image_size, backbone=backbone, channels=spec.channels,
                                    crop=spec.crop, equalize=spec.equalize,
                                    normalization=spec.normalization), train_df)
    prep = with_norm_stats(prep, train_df)
    runtime = {"strategy": strategy_name(strategy),
               "mixed_precision": mixed_precision, "xla": xla, "run_eagerly": run_eagerly}
    weights_info = weights_source(backbone, spec.weights, image_size)  # pretrains "synthetic" if missing
    config = {"spec": spec.model_dump(mode="json"), "classes": list(classes), "prep": prep.to_dict(),
              "runtime": runtime,
              **({"weights_file": _fingerprint_file(weights_info["file"])} if weights_info["file"] else {})}
    key = config_key({**config, "data": sorted(zip(manifest["path"], manifest["split"]))})
    if reuse:
        existing = _finished_run(out, key) if role.chief else None
        if share(distribution, role, [existing is not None])[0][0]:   # the chief decides
            if not role.chief:
                return _finished_run(out, key) or {}
            log.info("Reusing the finished run in %s (same configuration).", out)
            if name and existing.get("name") != name:
                existing["name"] = name
                records.write_record(out, existing)
            return existing
    runtime = {**runtime, "workers": role.workers, "replicas": role.replicas,
               "per_worker_batch": spec.batch_size // role.workers, "global_batch": spec.batch_size}

    label_mode = "binary" if spec.binary else "categorical"
    skipped: list = []
    keras.utils.set_random_seed(spec.seed)
    policy = keras.mixed_precision.global_policy()   # restored afterwards, whatever it was
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        # built before the folder is touched: a bad weights file or init_from stops here
        with distribution.scope():
            model = models.build_model(backbone, spec.variant, len(classes), image_size,
                                       weights_info["file"] or spec.weights, channels=spec.channels,
                                       binary=spec.binary, seed=spec.seed, head=spec.head,
                                       head_norm=spec.head_norm, freeze_bn=spec.freeze_bn)
            if spec.init_from:
                copied = models.copy_matching_weights(models.load_model(spec.init_from), model)
                log.info("Initialised %d layers from %s.", copied, spec.init_from)
            models.compile_model(model, models.make_optimizer(
                spec.optimizer, spec.learning_rate, spec.decay, momentum=spec.momentum,
                nesterov=spec.nesterov, clipnorm=spec.clipnorm, schedule=spec.schedule,
                total_steps=max(1, epochs * -(-len(train_df) // spec.batch_size)),
                weight_decay=spec.weight_decay),
                jit_compile=True if xla else False, run_eagerly=run_eagerly,
                label_smoothing=spec.label_smoothing)
        # under mixed_float16 Keras' compile wraps the optimizer in a LossScaleOptimizer (the
        # loss scaled up before the float16 gradients, unscaled before the step): recorded
        runtime["loss_scale"] = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        with contextlib.ExitStack() as held:
            # a saved state that would not restore whole is discarded before the group agrees
            # on the epoch to resume at (cxrlib.runs.backup)
            check = ((lambda folder: discard_broken_backup(model, folder))
                     if recipe.training == "fit" and epochs > 0 else None)
            work = _join(distribution, role, out, key, config, fresh=not reuse, held=held,
                         check=check)
            save_split(manifest, work / "split.csv")
            # the frozen heads standardise their features (v1 on its cached ones); a fine-tuned
            # backbone's features move, so V3 keeps what it inherits (init_from) or the identity
            if not spec.init_from and recipe.frozen and recipe.training == "fit":
                _standardise(model, train_df, classes, prep, spec.batch_size)
            weights_by_class = balanced_weights(train_df["label"], classes) if spec.class_weight else None
            started = time.time()
            resumed = (work / "backup").is_dir()
            if recipe.training == "features":
                if (out / "features.npz").is_file() and not (work / "features.npz").is_file():
                    shutil.copy2(out / "features.npz", work / "features.npz")
                history = _train_v1(model, train_df, val_df, classes, prep, work, epochs, spec,
                                    label_mode, weights_by_class, progress, skipped)
            elif epochs > 0:
                with disk_full_is_one_line(work, out):
                    history = _fit(model, train_df, val_df, classes, prep, work, epochs, spec,
                                   label_mode, weights_by_class, tensorboard, progress, callbacks,
                                   skipped)
            else:
                history = {}
                model.save(work / "model.keras")
            wall = time.time() - started
            test = None   # scored by the chief alone (the others' record is not written)
            if role.chief and not test_df.empty:
                best = (models.load_model(str(work / "model.keras"))
                        if (work / "model.keras").is_file() else model)
                test = evaluate(best, test_df, classes, prep, spec.batch_size, bootstrap=bootstrap,
                                seed=spec.seed)
            untrained = (_score_untrained(model, train_df, val_df, classes, prep, spec.batch_size,
                                          label_mode) if epochs == 0 else {})  # v0's row of the table

            epochs_run = len(history.get("loss", []))
            final = {k: (history[k][-1] if history.get(k) else untrained.get(k))
                     for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            record = {
                "schema": records.SCHEMA,
                "name": name or models.model_name(backbone, spec.variant),
                "created": pd.Timestamp.now(tz="UTC").isoformat(),
                "config_key": key,
                "dataset": {"root": manifest.attrs.get("root", ""), "layout": manifest.attrs.get("layout", ""),
                            "split_file": str(out / "split.csv"), "classes": list(classes),
                            "n_train": len(train_df), "n_val": len(val_df), "n_test": len(test_df),
                            **(dataset_info or {})},
                "model": {"backbone": backbone, "variant": spec.variant, "weights": spec.weights,
                          "weights_file": weights_info["file"], "weights_info": weights_info["info"],
                          "image_size": image_size, "channels": spec.channels, "head": spec.head,
                          "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                          "total_params": int(model.count_params())},
                "prep": prep.to_dict(),
                "spec": spec.model_dump(mode="json"),
                "runtime": runtime,
                "environment": environment_info(),
                "training": {"epochs_run": epochs_run, "wall_time_s": wall, "history": history,
                             "resumed": resumed},
                "final": {k: (None if v is None else float(v)) for k, v in final.items()},
                "test": test,
                "skipped": skipped + (test or {}).get("skipped", []),
                "artifacts": {"model": "model.keras", "history": "history.csv", "split": "split.csv"},
            }
            if role.chief:
                records.write_record(work, record)
                _publish(work, out)
            else:
                shutil.rmtree(work, ignore_errors=True)   # the chief's folder holds the run
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return record


def check_arguments(spec: RunSpec, classes: Sequence[str], train_df: pd.DataFrame, out: Path,
                    image_size: int, epochs: int) -> None:
    """Every check that needs no model, before anything is written; ValueError says what to do.
    (The settings' own ranges, such as a batch size of at least 1, are :class:`RunSpec`'s.)"""
    backbone = spec.backbone
    if image_size < min_input_size(backbone, spec.head):
        raise InputError(f"{backbone} needs images of at least {min_input_size(backbone, spec.head)} px, "
                         f"not {image_size}; use a larger --image-size.")
    if epochs < 1 and get_variant(spec.variant).training != "none":
        raise InputError(f"epochs must be at least 1, not {epochs} (for an untrained baseline "
                         "use --variant v0).")
    folded = [str(c).strip().lower() for c in classes]
    twice = sorted({c for c in classes if folded.count(str(c).strip().lower()) > 1})
    if twice:
        raise InputError(f"The classes {twice} name the same class twice (the names are compared "
                         "without case); give each class once with --classes.")
    if len(classes) < 2:
        raise InputError(f"A classifier needs at least two classes; the data has {list(classes)}. "
                         "Add a folder per class.")
    if spec.binary and len(classes) != 2:
        raise InputError(f"--binary needs exactly two classes, not {len(classes)}; pick two with --classes.")
    if train_df.empty:
        raise InputError("The manifest has no 'train' rows; split it with split_manifest first.")
    missing = sorted(set(classes) - set(train_df["label"]))
    if missing:
        raise InputError(f"Classes {missing} have no training images; add images or leave them "
                         "out with --classes.")
    if spec.init_from and not Path(spec.init_from).is_file():
        raise FileNotFoundError(f"No model file at {spec.init_from} (--init-from).")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"The run folder {out} is a file; give --out a folder path.")


def _finished_run(out: Path, key: str) -> dict | None:
    """The record of the finished run in ``out`` when its configuration key is ``key``."""
    from cxrlib.runs import records

    if not (out / "record.json").is_file() or not (out / "model.keras").is_file():
        return None
    try:
        existing = records.read_record(out)
    except ValueError:
        return None
    return existing if existing.get("config_key") == key else None


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


def _join(distribution, role: Role, out: Path, key: str, config: dict, fresh: bool,
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


def _publish(work: Path, out: Path) -> None:
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


def _fit(model, train_df, val_df, classes, prep, out: Path, epochs: int, spec: RunSpec,
         label_mode: str, weights_by_class, tensorboard: bool, progress: bool,
         extra_callbacks: Sequence, skipped: list) -> dict:
    """``model.fit`` with checkpoint, backup/restore, CSV log and optional early stopping.

    The checkpoint keeps the epoch with the best validation loss (``spec.keep_best``), or
    every epoch's model in turn, so that the last one is scored (as the courses did)."""
    import keras

    train_ds = make_dataset(train_df, classes, prep, spec.batch_size, training=True,
                            augment=spec.augment, seed=spec.seed, label_mode=label_mode,
                            skip_log=skipped, progress=progress)
    val_ds = (make_dataset(val_df, classes, prep, spec.batch_size, label_mode=label_mode,
                           skip_log=skipped) if not val_df.empty else None)
    monitor = "val_loss" if val_ds is not None else "loss"
    earlier = read_history(out / "history.csv")  # epochs logged before a resume
    done = len(earlier.get("loss", []))
    checkpoint = (best_checkpoint(out / "model.keras", monitor, earlier) if spec.keep_best
                  else keras.callbacks.ModelCheckpoint(str(out / "model.keras")))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        checkpoint,
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=done > 0),
        *extra_callbacks,
    ]
    if spec.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=spec.early_stopping,
                                                       restore_best_weights=False))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
    if progress:
        callbacks.append(_epoch_bar(epochs))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=weights_by_class,
              callbacks=callbacks, shuffle=False, verbose=0)
    if not (out / "model.keras").is_file():  # no epoch had a finite monitor value: diverged
        log.warning("No epoch of %s had a finite %s (the training diverged); keeping the last "
                    "epoch's model so that the run is still recorded.", out, monitor)
        model.save(out / "model.keras")
    return read_history(out / "history.csv")


def best_checkpoint(path: Path, monitor: str, history: dict[str, list[float]]):
    """A save-best-only ModelCheckpoint that remembers the best value of a resumed run.

    Keras starts every checkpoint at +inf, so after a resume the first epoch would overwrite
    a better model saved before the stop. Seeded with the best ``monitor`` value in the
    history (when that model is on disk), only a better epoch replaces it.
    """
    import keras

    earlier = [v for v in history.get(monitor, []) if np.isfinite(v)]
    best = min(earlier) if earlier and path.is_file() else None
    return keras.callbacks.ModelCheckpoint(str(path), monitor=monitor, save_best_only=True,
                                           initial_value_threshold=best)


def extract_features(model, frames: Sequence[pd.DataFrame], classes, prep: Prep, batch_size: int,
                     label_mode: str, skipped: list | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pooled backbone features (N, D) and encoded labels for each manifest in ``frames``.

    The frozen forward pass is one traced graph for all of them: its batch dimension is left
    free, so neither the last, smaller batch nor the next manifest traces it again. (Eager
    calls cost DenseNet121 about 2.5x more per batch; a trace per batch shape doubled the
    cost of a small set.)
    """
    import tensorflow as tf

    from cxrlib.models.build import feature_extractor

    extractor = feature_extractor(model)
    forward = None
    out = []
    for frame in frames:
        ds = make_dataset(frame, classes, prep, batch_size, label_mode=label_mode, skip_log=skipped)
        if forward is None:
            forward = tf.function(lambda x: extractor(x, training=False),
                                  input_signature=[ds.element_spec[0]])
        feats, labels = [], []
        for x, y in ds:
            feats.append(np.asarray(forward(x), dtype=np.float32))   # float16 under mixed precision
            labels.append(np.asarray(y))
        out.append((np.concatenate(feats), np.concatenate(labels)))
    return out


def _train_v1(model, train_df, val_df, classes, prep, out: Path, epochs: int, spec: RunSpec,
              label_mode: str, weights_by_class, progress: bool, skipped: list) -> dict:
    """V1: extract the frozen features once (cached in ``features.npz``), train the softmax on
    them, and keep the epoch with the best validation loss when ``spec.keep_best``, as every
    other variant does (a softmax on ~1000 features and a few hundred films fits the training
    set within a few epochs; what it does after that is fit noise). Without it, the last
    epoch is kept, as the course did."""
    import keras

    from cxrlib.models.build import adapt_head_norm, classifier_head, feature_extractor

    cache = out / "features.npz"
    backbone_bytes = hashlib.sha256()
    for weight in feature_extractor(model).weights:
        backbone_bytes.update(np.asarray(weight).tobytes())
    key = config_key({"prep": prep.to_dict(), "data": data_fingerprint(pd.concat([train_df, val_df])),
                      "classes": list(classes), "label_mode": label_mode,
                      "backbone": backbone_bytes.hexdigest()})
    data = dict(np.load(cache)) if cache.is_file() else {}
    if data.get("key") is None or str(data["key"]) != key:
        frames = [train_df] + ([val_df] if not val_df.empty else [])
        extracted = extract_features(model, frames, classes, prep, spec.batch_size, label_mode, skipped)
        data = {"x_train": extracted[0][0], "y_train": extracted[0][1]}
        if len(extracted) > 1:
            data["x_val"], data["y_val"] = extracted[1]
        write_npz_atomic(cache, {"key": np.array(key), **data})
    adapt_head_norm(model, data["x_train"])
    with model.distribute_strategy.scope():   # the head's fit runs as the model's would
        head = classifier_head(model)
        head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                     jit_compile=model.jit_compile, run_eagerly=model.run_eagerly)
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv"))]
    if validation is not None and (spec.keep_best or spec.early_stopping):
        # restores the best epoch's weights when the fit ends (keep_best)
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=spec.early_stopping or epochs,
            restore_best_weights=spec.keep_best))
    if progress:
        callbacks.append(_epoch_bar(epochs))
    head.fit(data["x_train"], data["y_train"], validation_data=validation, epochs=epochs,
             batch_size=spec.batch_size, class_weight=weights_by_class, callbacks=callbacks,
             shuffle=True, verbose=0)
    model.save(out / "model.keras")  # the head shares its layers with the full model
    return read_history(out / "history.csv")


def _standardise(model, train_df: pd.DataFrame, classes, prep: Prep, batch_size: int) -> None:
    """Adapt the head's Normalization (when it has one) on the training split's pooled features."""
    from cxrlib.models.build import HEAD_NORM, adapt_head_norm

    if HEAD_NORM in {layer.name for layer in model.layers}:
        [(features, _)] = extract_features(model, [train_df], classes, prep, batch_size, "categorical")
        adapt_head_norm(model, features)


def _score_untrained(model, train_df, val_df, classes, prep, batch_size: int, label_mode: str) -> dict:
    """Loss and accuracy of an untrained model on train and val (V0's row of the table)."""
    scores: dict[str, float] = {}
    for prefix, frame in (("", train_df), ("val_", val_df)):
        if frame.empty:
            continue
        ds = make_dataset(frame, classes, prep, batch_size, label_mode=label_mode)
        loss, accuracy = model.evaluate(ds, verbose=0)[:2]
        scores[prefix + "loss"] = float(loss)
        scores[prefix + "accuracy"] = float(accuracy)
    return scores
