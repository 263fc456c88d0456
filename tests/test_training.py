"""Models and training: every backbone × variant builds flat and trains; frozen really is
frozen; V1 extracts features once; learning happens; interrupted runs resume; records are valid."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from cxrlib.backbones import BACKBONES
from cxrlib.data.datasets import load_manifest
from cxrlib.data.splits import split_manifest
from cxrlib.data.synthetic import generate_synthetic
from cxrlib.models.build import SCRATCH_LAST_CONV, build_model, compile_model, load_model, make_optimizer
from cxrlib.runs import backup, features, fitting, run_folder
from cxrlib.runs import train as training
from cxrlib.runs.records import find_records, read_record, record_json, validate_record
from cxrlib.runs.report import comparison_table, write_report
from cxrlib.spec import variant_spec
from cxrlib.variants import VARIANT_NAMES

CLASSES_EASY = ["Bacterial Pneumonia", "COVID", "Normal"]


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory) -> Path:
    """An easy synthetic set: three classes, strong lesions, no markers, 64 px."""
    out = tmp_path_factory.mktemp("easy")
    return generate_synthetic(out, per_class=70, size=64, seed=1, classes=CLASSES_EASY,
                              severity=(1.0, 1.3), marker_prob=0.0, vary_size=False, progress=False)


@pytest.fixture(scope="session")
def easy_split(easy_data):
    return split_manifest(load_manifest(easy_data), val=0.2, test=0.2, seed=0)


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    generate_synthetic(out, per_class=8, size=48, seed=2, classes=["COVID", "Normal"],
                       vary_size=False, progress=False)
    return split_manifest(load_manifest(out), val=0.25, test=0.25, seed=0)


def _one_step(model, size: int, channels: int = 3) -> float:
    compile_model(model, make_optimizer("adam", 1e-3, 0))
    x = np.random.default_rng(0).uniform(-1, 1, (4, size, size, channels)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 0], model.output_shape[-1])
    return float(model.train_on_batch(x, y)[0])


@pytest.mark.slow
@pytest.mark.parametrize("backbone", tuple(BACKBONES))
@pytest.mark.parametrize("variant", ["frozen", "finetune"])
def test_every_backbone_builds_flat_and_trains_a_step(backbone, variant) -> None:
    model = build_model(backbone, variant, 3, image_size=75, weights=None)
    assert model.output_shape == (None, 3)
    assert model.get_layer(BACKBONES[backbone].last_conv) in model.layers  # flat: CAM-ready
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    trainable = {w.path for w in model.trainable_weights}
    head = {w.path for layer in model.layers if layer.name.startswith("head_")
            for w in layer.trainable_weights}
    if variant == "frozen":
        assert trainable == head
    else:
        assert trainable > head
    assert np.isfinite(_one_step(model, 75))


@pytest.mark.parametrize("variant", ["v0", "v1", "v2", "v2reg", "v3"])
def test_densenet_progression_heads(variant) -> None:
    model = build_model("densenet121", variant, 3, image_size=32, weights=None)
    dense = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    dropout = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    expected = {"v0": 1, "v1": 1, "v2": 3, "v2reg": 3, "v3": 3}[variant]
    assert len(dense) == expected
    assert len(dropout) == (1 if variant in ("v2reg", "v3") else 0)
    assert model.get_layer("head_pool").output.shape[-1] == 1024  # DenseNet121's features
    assert np.isfinite(_one_step(model, 32))


def test_scratch_binary_and_one_channel_models() -> None:
    scratch = build_model("scratch", "scratch", 2, image_size=64, weights=None, binary=True)
    assert scratch.output_shape == (None, 1)
    assert scratch.get_layer(SCRATCH_LAST_CONV)
    gray = build_model("resnet50", "frozen", 3, image_size=64, weights=None, channels=1)
    assert gray.input_shape == (None, 64, 64, 1)
    assert gray.get_layer("adapter_conv").trainable
    assert np.isfinite(_one_step(gray, 64, channels=1))
    with pytest.raises(ValueError, match="75"):
        build_model("inceptionv3", "frozen", 3, image_size=64, weights=None)
    with pytest.raises(ValueError):
        build_model("densenet121", "scratch", 3, weights=None)
    assert set(VARIANT_NAMES) >= {"v0", "v1", "v2", "v2reg", "v3", "frozen", "finetune", "scratch"}


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory) -> str:
    """A local weights file standing in for ImageNet (which cannot be downloaded here)."""
    base = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3))
    for layer in base.layers:  # non-trivial BatchNorm statistics, so "unchanged" means something
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, var = layer.moving_mean, layer.moving_variance
            mean.assign(np.full(mean.shape, 0.01, "float32"))
            var.assign(np.full(var.shape, 1.1, "float32"))
    path = tmp_path_factory.mktemp("weights") / "densenet121_local.weights.h5"
    base.save_weights(path)
    return str(path)


def _backbone_state(model) -> dict[str, np.ndarray]:
    return {w.path: w.numpy().copy() for layer in model.layers if not layer.name.startswith("head_")
            and layer.name != "predictions" for w in layer.weights}


@pytest.mark.parametrize("variant", ["v2reg", "v3"])
def test_frozen_weights_and_batchnorm_statistics_stay_put(pretrained_file, variant) -> None:
    model = build_model("densenet121", variant, 3, image_size=32, weights=pretrained_file)
    before = _backbone_state(model)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and all(not layer.trainable for layer in bn)  # inference mode
    np.testing.assert_allclose(np.array(bn[0].moving_mean), 0.01)  # the local file was loaded
    compile_model(model, make_optimizer("sgd", 0.05, 0))
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (16, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 16), 3)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = _backbone_state(model)
    bn_names = {layer.name for layer in bn}
    batchnorm = [p for p in before if p.split("/")[0] in bn_names]
    kernels = [p for p in before if p.split("/")[0] not in bn_names]
    assert any("moving_mean" in p for p in batchnorm) and kernels
    assert all(np.array_equal(before[p], after[p]) for p in batchnorm)  # statistics and scales
    changed = sum(not np.array_equal(before[p], after[p]) for p in kernels)
    if variant == "v2reg":
        assert changed == 0
    else:  # fine-tuning moves (nearly) every convolution; a few may see vanishing gradients
        assert changed >= 0.9 * len(kernels)


def test_v1_keeps_the_epoch_with_the_best_validation_loss(tiny_split, tmp_path) -> None:
    from cxrlib.models.build import classifier_head

    classes = ["COVID", "Normal"]
    spec = variant_spec("densenet121", "v1", weights=None, image_size=32, epochs=12, batch_size=4,
                        learning_rate=0.5, decay=0)
    record = training.train(tiny_split, classes, spec, tmp_path / "v1", progress=False, bootstrap=20)
    val_loss = record.training.history["val_loss"]
    assert len(val_loss) == 12 and int(np.argmin(val_loss)) < 11   # it overfits: a later epoch is worse
    cached = np.load(tmp_path / "v1" / "features.npz")
    head = classifier_head(load_model(str(tmp_path / "v1" / "model.keras")))
    head.compile(loss="categorical_crossentropy")
    saved = float(head.evaluate(cached["x_val"], cached["y_val"], verbose=0))
    assert saved == pytest.approx(min(val_loss), rel=1e-4) and saved < val_loss[-1]


def test_v1_extracts_features_once(tiny_split, tmp_path, monkeypatch) -> None:
    calls = []
    real = features.extract_features
    monkeypatch.setattr(features, "extract_features",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    classes = ["COVID", "Normal"]
    spec = variant_spec("densenet121", "v1", weights=None, image_size=32, epochs=5, batch_size=8)
    record = training.train(tiny_split, classes, spec, tmp_path / "v1", progress=False, bootstrap=50)
    assert len(calls) == 1  # train and validation in one pass — not once per epoch
    assert record.training.epochs_run == 5
    assert (tmp_path / "v1" / "features.npz").is_file()
    training.train(tiny_split, classes, spec, tmp_path / "v1", progress=False, bootstrap=50, reuse=False)
    assert len(calls) == 1  # a re-run reads the cached features
    assert load_model(str(tmp_path / "v1" / "model.keras")).output_shape == (None, 2)


def test_v0_is_untrained_and_recorded(tiny_split, tmp_path) -> None:
    spec = variant_spec("densenet121", "v0", weights=None, image_size=32, batch_size=8)
    record = training.train(tiny_split, ["COVID", "Normal"], spec, tmp_path / "v0", progress=False,
                            bootstrap=50)
    assert record.training.epochs_run == 0 and record.training.history == {}
    assert record.spec == spec   # the record stores the spec as it is
    assert record.spec.clipnorm == 1.0
    assert 0.0 <= record.final.accuracy <= 1.0 and record.test.n > 0
    assert record_json(read_record(tmp_path / "v0")) == record_json(record)   # as written


@pytest.mark.slow
def test_scratch_cnn_learns_the_easy_set(easy_split, tmp_path) -> None:
    spec = variant_spec("scratch", "scratch", image_size=64, epochs=15, batch_size=16, seed=0)
    record = training.train(easy_split, CLASSES_EASY, spec, tmp_path / "cnn", progress=False,
                            bootstrap=200)
    # Learnt, in the statistical sense: the bootstrap interval of the test accuracy (42 films)
    # lies above chance (1/3). The accuracy itself is not bit-reproducible on the CPU and spreads
    # widely for so small a network and set: 0.67, 0.74, 0.79, 0.98 and 1.00 were measured with
    # this very call on one machine (2026-12-02), where a fixed bar of 0.8 had passed before.
    low, _ = record.test.ci.accuracy
    assert low > 1 / 3 and record.test.accuracy >= 0.6
    history = record.training.history
    assert history["loss"][-1] < history["loss"][0]  # learning, not luck
    assert record.test.ci.accuracy[0] > 1 / 3


@pytest.mark.slow
def test_v3_finetuning_learns_the_easy_set(easy_split, tmp_path) -> None:
    spec = variant_spec("densenet121", "v3", weights=None, image_size=32, epochs=16, batch_size=16,
                        seed=0, optimizer="adam", learning_rate=1e-3, decay=0)
    record = training.train(easy_split, CLASSES_EASY, spec, tmp_path / "v3", progress=False,
                            bootstrap=200)
    # DenseNet121 trained whole from random weights on 126 images is noisy: the best
    # checkpoint scored 0.79-0.88 over four seeds and two CPUs. The bar is "clearly learned"
    # (chance is 1/3), not one machine's number.
    assert record.test.accuracy >= 0.65 and record.test.ci.accuracy[0] > 1 / 3
    val_loss = record.training.history["val_loss"]
    assert min(val_loss) < 0.6 * val_loss[0]


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch: int):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("simulated power cut")


def test_interrupted_run_resumes_from_backup(tiny_split, tmp_path) -> None:
    out = tmp_path / "run"
    spec = variant_spec("scratch", "scratch", image_size=32, epochs=4, batch_size=8)
    kwargs = dict(progress=False, bootstrap=50, backup_every_s=0)   # the state saved every epoch
    with pytest.raises(RuntimeError, match="power cut"):
        training.train(tiny_split, ["COVID", "Normal"], spec, out, callbacks=[_Crash(1)], **kwargs)
    partial = out / run_folder.PARTIAL  # the run in progress stays out of the run folder proper
    assert (partial / "backup").is_dir() and not (out / "record.json").exists()
    assert len(fitting.read_history(partial / "history.csv")["loss"]) == 2
    record = training.train(tiny_split, ["COVID", "Normal"], spec, out, **kwargs)
    assert record.training.resumed is True
    assert record.training.epochs_run == 4
    assert len(record.training.history["val_loss"]) == 4
    assert not partial.exists() and not (out / run_folder.LOCK_FILE).exists()  # removed once finished


def _history(folder: Path, rows: list[tuple[int, float, float]], covered: int) -> None:
    """A run folder's history.csv (epoch, loss, val_loss) and a saved state covering ``covered``
    epochs."""
    pd.DataFrame(rows, columns=["epoch", "loss", "val_loss"]).to_csv(folder / "history.csv", index=False)
    (folder / "backup").mkdir(exist_ok=True)
    (folder / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": covered}))


def test_a_resumed_run_starts_from_the_best_epoch_its_saved_state_covers(tmp_path) -> None:
    rows = [(0, 0.9, 0.8), (1, 0.5, 0.3), (2, 0.7, float("nan")), (3, 0.6, 0.1)]
    _history(tmp_path, rows, covered=3)
    assert fitting.resumed_best(tmp_path, "val_loss") is None   # no model on disk: a fresh start
    (tmp_path / "model.keras").write_bytes(b"the best model, saved before the stop")
    assert fitting.resumed_best(tmp_path, "val_loss") == 0.3    # epoch 3 came after the last save
    assert fitting.resumed_best(tmp_path, "loss") == 0.5
    _history(tmp_path, rows, covered=4)
    assert fitting.resumed_best(tmp_path, "val_loss") == 0.1


def _saver_run(tmp_path: Path, values: list[float], keep_best: bool, best: float | None = None,
               every_s: float = 0.0):
    """Drive a run saver over epochs with the given validation losses; the model's first kernel
    is set to the epoch's number, so the saved model tells which epoch it is."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = build_model("scratch", "scratch", 2, image_size=32, weights=None)
    compile_model(model, make_optimizer("adam", 1e-3, 0))
    saver = backup.run_saver(tmp_path / "model.keras", tmp_path / "backup", "val_loss", keep_best,
                             best=best, every_s=every_s)
    saver.set_model(model)
    saver.on_train_begin()
    kernel = model.trainable_weights[0]
    for epoch, value in enumerate(values):
        kernel.assign(np.full(kernel.shape, float(epoch)))
        saver.on_epoch_end(epoch, {"val_loss": value})
    return saver, model


def _saved_epoch(path: Path) -> float:
    return float(np.asarray(load_model(path).trainable_weights[0])[0, 0, 0, 0])


def test_the_run_saver_keeps_the_best_epoch_and_the_latest_one(tmp_path) -> None:
    saver, model = _saver_run(tmp_path / "best", [0.8, 0.3, float("nan"), 0.5], keep_best=True)
    assert _saved_epoch(tmp_path / "best" / "model.keras") == 1           # the lowest finite loss
    assert float(np.asarray(model.trainable_weights[0])[0, 0, 0, 0]) == 3  # the model is left as it was
    meta = json.loads((tmp_path / "best" / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 4                                            # saved after every epoch
    _saver_run(tmp_path / "latest", [0.8, 0.3, 0.5], keep_best=False)
    assert _saved_epoch(tmp_path / "latest" / "model.keras") == 2
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "model.keras").write_bytes(b"the best model, saved before the stop")
    saver, _ = _saver_run(tmp_path / "resumed", [0.4, 0.35], keep_best=True, best=0.3)  # worse
    saver.on_train_end()
    assert (tmp_path / "resumed" / "model.keras").read_bytes() == b"the best model, saved before the stop"


def test_the_run_saver_writes_at_most_every_interval_and_at_the_end(tmp_path) -> None:
    saver, _ = _saver_run(tmp_path, [0.8, 0.3, 0.5], keep_best=True, every_s=3600)
    assert not (tmp_path / "model.keras").exists() and not (tmp_path / "backup").exists()
    saver.on_train_end()                      # the end writes the best epoch's model ...
    assert _saved_epoch(tmp_path / "model.keras") == 1
    assert not (tmp_path / "backup").exists()  # ... and a finished fit needs no saved state


def test_same_seed_same_split_and_initial_weights(tiny_split) -> None:
    import keras

    def built(seed: int):
        keras.utils.set_random_seed(seed)   # the caller seeds, as train does
        return build_model("scratch", "scratch", 2, image_size=32, weights=None, seed=seed)

    a, b, c = built(7), built(7), built(8)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), c.get_weights()))
    again = split_manifest(tiny_split.drop(columns="split").assign(split=""), val=0.25, test=0.25, seed=0)
    assert again["split"].tolist() == tiny_split["split"].tolist()


def test_finished_run_is_reused_and_report_built_from_records(tiny_split, tmp_path) -> None:
    kwargs = dict(progress=False, bootstrap=50)
    small = dict(weights=None, image_size=32, epochs=1, batch_size=8)
    runs = tmp_path / "runs"
    scratch = variant_spec("scratch", "scratch", **small)
    first = training.train(tiny_split, ["COVID", "Normal"], scratch,
                           training.run_dir(runs, "scratch", "scratch"), **kwargs)
    again = training.train(tiny_split, ["COVID", "Normal"], scratch,
                           training.run_dir(runs, "scratch", "scratch"), **kwargs)
    assert again.created == first.created  # loaded, not retrained
    training.train(tiny_split, ["COVID", "Normal"], variant_spec("densenet121", "v0", **small),
                   training.run_dir(runs, "densenet121", "v0"), **kwargs)
    records = find_records(runs)
    assert [validate_record(record_json(r)) for r in records] == [[], []]
    table = comparison_table(records)
    assert table["Model"].tolist() == ["scratch-scratch", "densenet121-v0"]  # the library's names
    assert table.loc[0, "Test Accuracy"] == pytest.approx(records[0].test.accuracy)
    written = write_report(runs)
    assert (runs / "table.md").read_text().count("scratch-scratch") == 1
    assert all(Path(p).stat().st_size > 0 for p in written.values())


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tiny_split, tmp_path) -> None:
    split_file = tmp_path / "split.csv"
    tiny_split.to_csv(split_file, index=False)
    script = textwrap.dedent(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cxrlib.data.splits import load_split
        from cxrlib.runs.train import train
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        from cxrlib.spec import variant_spec
        spec = variant_spec("scratch", "scratch", image_size=32, epochs=2, batch_size=8)
        record = train(load_split({str(split_file)!r}), ["COVID", "Normal"], spec,
                       {str(tmp_path / "mirrored")!r}, strategy=strategy, progress=False, bootstrap=20)
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync,
                           "epochs": record.training.epochs_run,
                           "loss": record.final.loss}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["epochs"] == 2 and np.isfinite(result["loss"])


def test_run_eagerly_is_a_compile_setting() -> None:
    """Smoke runs skip graph tracing through Keras' own ``compile(run_eagerly=...)``."""
    model = build_model("scratch", "scratch", 2, image_size=32, weights=None)
    assert not compile_model(model, make_optimizer("adam", 1e-3, 0.0)).run_eagerly
    assert compile_model(model, make_optimizer("adam", 1e-3, 0.0), run_eagerly=True).run_eagerly


def test_sgd_clips_a_huge_gradient_and_every_optimiser_clips() -> None:
    """An exploding gradient (V3 at the course's SGD lr 0.01 reached a loss of 3e6) moves the
    weights by a learning-rate-sized step, not by the gradient's size."""
    from cxrlib.models.build import CLIPNORM

    step = {}
    for clipnorm in (CLIPNORM, None):
        weights = keras.Variable(np.zeros(10, "float32"))
        optimizer = make_optimizer("sgd", 0.01, 0.0, clipnorm=clipnorm)
        optimizer.apply_gradients([(keras.ops.full((10,), 1e6), weights)])
        step[clipnorm] = float(np.linalg.norm(np.asarray(weights)))
    # the first Nesterov step is (1 + momentum) x lr x the (clipped) gradient
    np.testing.assert_allclose(step[CLIPNORM], 1.9 * 0.01 * CLIPNORM, rtol=1e-3)
    assert step[None] > 1e4
    # Adam and its kin are scale-free per step, but a clipped gradient also bounds their moments
    assert all(make_optimizer(name, 1e-3, 0.0).clipnorm == CLIPNORM
               for name in ("sgd", "adam", "nadam", "rmsprop"))
