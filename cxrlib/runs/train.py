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
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib.backbones import SCRATCH, check_size, default_size
from cxrlib.data.pipeline import with_norm_stats
from cxrlib.data.prepare import Prep, with_crop_reference
from cxrlib.data.splits import class_weights as balanced_weights
from cxrlib.data.splits import save_split, subset
from cxrlib.environment import environment_info
from cxrlib.errors import InputError
from cxrlib.runs import records
from cxrlib.runs.backup import discard_broken_backup, disk_full_is_one_line
from cxrlib.runs.distributed import share, worker_role
from cxrlib.runs.evaluate import evaluate
from cxrlib.runs.features import standardise, train_features
from cxrlib.runs.fitting import fit_model, score_untrained
from cxrlib.runs.pretrain import weights_source
from cxrlib.runs.run_folder import (
    RunFolderError,
    config_key,
    fingerprint_file,
    finished_run,
    join_run,
    publish_run,
)
from cxrlib.spec import RunSpec
from cxrlib.variants import get_variant

log = logging.getLogger(__name__)

def run_dir(results_dir: str | Path, backbone: str, variant: str) -> Path:
    """Where a run lives in a shared results directory: ``RESULTS/<backbone>-<variant>``.

    Aliases share a directory (``frozen`` is ``v2reg``, ``finetune`` is ``v3``), so a
    notebook that asks for DenseNet121 ``frozen`` finds the V2-reg run another one trained.
    """
    return Path(results_dir) / f"{backbone}-{get_variant(variant).name}"


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
          run_eagerly: bool = False, tensorboard: bool = False,
          backup_every_s: float | None = None) -> records.RunRecord | None:
    """Train ``spec`` on the ``train`` split of ``manifest``; return the run's typed record
    (:class:`cxrlib.runs.records.RunRecord`).

    ``spec`` (:class:`cxrlib.spec.RunSpec`) is everything the run is; the record stores it as
    it is. The manifest must carry a ``split`` column (made as ``spec.split`` says, by
    :func:`cxrlib.data.splits.prepare_split` or a course's data recipe). The run validates on
    ``val``, keeps the best model (``spec.keep_best``; else the last epoch's), and scores it on
    ``test``; everything lands in ``out_dir``.

    The keyword options change how the run is computed, not what it is: ``strategy``
    (None, ``"mirrored"``, ``"multiworker"`` or a strategy object), ``mixed_precision``,
    ``xla``, ``run_eagerly`` (skips graph tracing: only worth it for a handful of steps),
    ``tensorboard``, ``progress``, extra Keras ``callbacks``, ``bootstrap`` resamples for
    the test intervals, and ``backup_every_s``, the seconds of training between two saves of
    the run's state (default :data:`cxrlib.runs.backup.BACKUP_EVERY_S`; 0: every epoch, as
    a group of workers always does). Every setting is checked before anything is written; an impossible
    one raises ValueError.

    ``spec.batch_size`` is the **global** batch, whatever the strategy: each step takes that
    many images, split among the replicas (every device of every worker), so a spec trains
    with the same batch on one machine or several. Under ``"multiworker"`` every worker calls
    ``train`` with the same arguments (:mod:`cxrlib.runs.distributed` says who writes what):
    the chief returns the record it wrote; any other worker writes nowhere but a temporary
    folder it removes, and returns its own account of the run without test scores (where the
    chief reused a finished run: that run's record if this worker can read it, else None).
    ``record.runtime`` names the strategy, the workers, the replicas and the batches.
    """
    import keras

    from cxrlib.models import build as models

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
              **({"weights_file": fingerprint_file(weights_info["file"])} if weights_info["file"] else {})}
    key = config_key({**config, "data": sorted(zip(manifest["path"], manifest["split"]))})
    if reuse:
        existing = finished_run(out, key) if role.chief else None
        if share(distribution, role, [existing is not None])[0][0]:   # the chief decides
            if not role.chief:
                return finished_run(out, key)
            log.info("Reusing the finished run in %s (same configuration).", out)
            if name and existing.name != name:
                existing = existing.model_copy(update={"name": name})
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
            work = join_run(distribution, role, out, key, config, fresh=not reuse, held=held,
                            check=check)
            save_split(manifest, work / "split.csv")
            # the frozen heads standardise their features (v1 on its cached ones); a fine-tuned
            # backbone's features move, so V3 keeps what it inherits (init_from) or the identity
            if not spec.init_from and recipe.frozen and recipe.training == "fit":
                standardise(model, train_df, classes, prep, spec.batch_size)
            weights_by_class = balanced_weights(train_df["label"], classes) if spec.class_weight else None
            started = time.time()
            resumed = (work / "backup").is_dir()
            if recipe.training == "features":
                if (out / "features.npz").is_file() and not (work / "features.npz").is_file():
                    shutil.copy2(out / "features.npz", work / "features.npz")
                history = train_features(model, train_df, val_df, classes, prep, work, epochs, spec,
                                         label_mode, weights_by_class, progress, skipped)
            elif epochs > 0:
                with disk_full_is_one_line(work, out):
                    history = fit_model(model, train_df, val_df, classes, prep, work, epochs, spec,
                                        label_mode, weights_by_class, tensorboard, progress, callbacks,
                                        skipped, backup_every_s=0 if role.workers > 1 else backup_every_s)
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
            untrained = (score_untrained(model, train_df, val_df, classes, prep, spec.batch_size,
                                         label_mode) if epochs == 0 else {})  # v0's row of the table

            epochs_run = len(history.get("loss", []))
            final = {k: (history[k][-1] if history.get(k) else untrained.get(k))
                     for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            record = records.to_record({
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
                "skipped": skipped + (test["skipped"] if test else []),
                "artifacts": {"model": "model.keras", "history": "history.csv", "split": "split.csv"},
            }, f"The record of the run in {out}")
            if role.chief:
                records.write_record(work, record)
                publish_run(work, out)
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
    check_size(backbone, image_size, spec.head)
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
