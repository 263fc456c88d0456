"""Tests for cxrlib.runs.two_stage: routing, threshold, chain-rule probabilities, evaluation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_record
from PIL import Image

from cxrlib.data.prepare import Prep
from cxrlib.runs import two_stage
from cxrlib.runs.evaluate import Run, load_run
from cxrlib.runs.metrics import class_probabilities
from cxrlib.runs.records import PrepInfo
from cxrlib.runs.two_stage import combine_stages, disease_probability, evaluate_two_stage

S1 = ["Normal", "Pneumonia"]
S2 = ["Bacterial Pneumonia", "Viral Pneumonia"]
FINAL = ["Normal", "Bacterial Pneumonia", "Viral Pneumonia"]


class Spy:
    """A stand-in model with fixed outputs that remembers every input it was called with.

    Stage 1 reads the disease probability from pixel [0, 0, 0]; stage 2 reads P(viral)
    from pixel [0, 1, 0], so each test image says exactly what each stage will answer.
    """

    def __init__(self, pixel: tuple[int, int], sigmoid: bool = True) -> None:
        self.pixel, self.sigmoid, self.seen = pixel, sigmoid, []

    def __call__(self, x, training: bool = False) -> np.ndarray:
        x = np.asarray(x)
        self.seen.append(x.copy())
        p = x[:, self.pixel[0], self.pixel[1], 0].astype(np.float64)
        return p[:, None] if self.sigmoid else np.stack([1 - p, p], axis=1)

    def markers(self) -> list[float]:
        """The id pixel [1, 1] of every image seen."""
        return [float(v) for batch in self.seen for v in batch[:, 1, 1, 0]]


def _images(p_disease: list[float], p_viral: list[float]) -> np.ndarray:
    """(N, 4, 4, 1) images: [0,0] = stage-1 answer, [0,1] = stage-2 answer, [1,1] = image id."""
    x = np.zeros((len(p_disease), 4, 4, 1), np.float32)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = p_disease, p_viral
    x[:, 1, 1, 0] = np.arange(len(p_disease))
    return x


def test_class_probabilities_and_disease_probability() -> None:
    np.testing.assert_allclose(class_probabilities(np.array([[0.2], [0.9]]), 2), [[0.8, 0.2], [0.1, 0.9]])
    np.testing.assert_allclose(class_probabilities(np.array([0.3]), 2), [[0.7, 0.3]])
    with pytest.raises(ValueError, match="does not fit 2 classes"):
        class_probabilities(np.zeros((2, 3)), 2)
    np.testing.assert_allclose(disease_probability(np.array([[0.2], [0.9]]), S1), [0.2, 0.9])
    # Normal as the positive (second) class of stage 1: the disease probability is 1 - p
    np.testing.assert_allclose(disease_probability(np.array([[0.2]]), ["Pneumonia", "Normal"]), [0.8])
    with pytest.raises(ValueError, match="Normal"):
        disease_probability(np.array([[0.2]]), ["Sick", "Well"])


def test_combine_stages_checks_counts() -> None:
    with pytest.raises(ValueError, match="routed"):
        combine_stages(np.array([0.9, 0.8]), np.array([[0.5, 0.5]]), np.array([True, True]), S2)
    labels, probs = combine_stages(np.array([0.1]), np.zeros((0, 2)), np.array([False]), S2)
    assert labels == ["Normal"] and probs.shape == (1, 3)


def test_a_recorded_prep_restores_the_tuple() -> None:
    prep = Prep(image_size=64, backbone="scratch", crop=True, crop_reference=(300, 200))
    recorded = {**prep.to_dict(), "crop_reference": [300, 200]}  # as JSON gives it back
    assert PrepInfo.model_validate(recorded).to_prep() == prep
    assert PrepInfo.model_validate(Prep(image_size=32).to_dict()).to_prep().crop_reference is None


# --------------------------------------------------------------------------- evaluation on files


def _write_images(folder: Path, rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    """PNG files whose pixels encode the stages' answers, as in _images (scaled to 0-255)."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (label, p_disease, p_viral) in enumerate(rows):
        image = np.zeros((8, 8), np.uint8)
        image[0, 0], image[0, 1], image[1, 1] = round(255 * p_disease), round(255 * p_viral), i
        path = folder / f"img{i}.png"
        Image.fromarray(image).save(path)
        records.append({"path": str(path), "label": label, "patient_id": "", "source": "",
                        "subtype": "", "mask_path": "", "mask_kind": "", "split": "test"})
    return pd.DataFrame(records)


class FileSpy(Spy):
    """A Spy reading images prepared by the pipeline (0-255 scaled to 0-1 by 'scratch')."""

    def markers(self) -> list[float]:
        return [round(float(v) * 255) for batch in self.seen for v in batch[:, 1, 1, 0]]


def _fake_stages(monkeypatch, stage1: Spy, stage2: Spy, classes1=S1, classes2=S2) -> None:
    prep = Prep(image_size=8, backbone="scratch", channels=1)
    stages = {name: Run(model=model, record=make_record(classes=names), prep=prep,
                        classes=list(names), dir=Path(name))
              for name, model, names in (("s1", stage1, classes1), ("s2", stage2, classes2))}
    monkeypatch.setattr(two_stage, "load_run", lambda run_dir: stages[str(run_dir)])


def test_evaluate_two_stage_routes_and_scores(tmp_path: Path, monkeypatch) -> None:
    rows = [("Normal", 0.1, 0.5), ("Normal", 0.6, 0.2),                 # one false alarm
            ("Bacterial Pneumonia", 0.9, 0.1), ("Bacterial Pneumonia", 0.2, 0.1),  # one missed
            ("Viral Pneumonia", 0.8, 0.9), ("Viral Pneumonia", 0.7, 0.3)]          # one mixed up
    manifest = _write_images(tmp_path / "imgs", rows)
    stage1, stage2 = FileSpy((0, 0)), FileSpy((0, 1))
    _fake_stages(monkeypatch, stage1, stage2)
    result = evaluate_two_stage("s1", "s2", manifest, FINAL, threshold=0.5, bootstrap=50)
    assert result["predicted"] == ["Normal", "Bacterial Pneumonia", "Bacterial Pneumonia",
                                   "Normal", "Viral Pneumonia", "Bacterial Pneumonia"]
    assert stage2.markers() == [1, 2, 4, 5]
    assert result["routed"] == 4
    assert result["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["per_class"]["Viral Pneumonia"]["recall"] == pytest.approx(0.5)
    assert result["per_class"]["Viral Pneumonia"]["precision"] == pytest.approx(1.0)
    assert result["stage1"] == {"sensitivity": pytest.approx(3 / 4), "specificity": pytest.approx(1 / 2)}
    assert result["classes"] == FINAL and result["n"] == 6
    assert np.asarray(result["probabilities"]).shape == (6, 3)
    assert result["ci"]["accuracy"] is not None
    # a lower threshold routes the missed bacterial case too
    stage2.seen.clear()
    low = evaluate_two_stage("s1", "s2", manifest, FINAL, threshold=0.15, bootstrap=0)
    assert stage2.markers() == [1, 2, 3, 4, 5]
    assert low["stage1"]["sensitivity"] == pytest.approx(1.0)
    assert low["confusion_matrix"][1] == [0, 2, 0]


def test_evaluate_two_stage_class_order_and_errors(tmp_path: Path, monkeypatch) -> None:
    manifest = _write_images(tmp_path / "imgs", [("Normal", 0.1, 0.5), ("Viral Pneumonia", 0.9, 0.9)])
    _fake_stages(monkeypatch, FileSpy((0, 0)), FileSpy((0, 1), sigmoid=False))
    order = ["Viral Pneumonia", "Normal", "Bacterial Pneumonia"]
    result = evaluate_two_stage("s1", "s2", manifest, order, bootstrap=0)
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    probs = np.asarray(result["probabilities"])
    np.testing.assert_allclose(probs[1], [0.9 * 0.9, 0.1, 0.9 * 0.1], atol=0.01)
    with pytest.raises(ValueError, match="must be"):
        evaluate_two_stage("s1", "s2", manifest, ["Normal", "COVID"], bootstrap=0)
    with pytest.raises(ValueError, match="not among"):
        evaluate_two_stage("s1", "s2", manifest.assign(label="COVID"), FINAL, bootstrap=0)


def test_evaluate_two_stage_skips_unreadable_files(tmp_path: Path, monkeypatch) -> None:
    manifest = _write_images(tmp_path / "imgs", [("Normal", 0.1, 0.5), ("Viral Pneumonia", 0.9, 0.9),
                                                 ("Bacterial Pneumonia", 0.8, 0.2)])
    Path(manifest.loc[1, "path"]).write_bytes(b"not an image")
    stage2 = FileSpy((0, 1))
    _fake_stages(monkeypatch, FileSpy((0, 0)), stage2)
    result = evaluate_two_stage("s1", "s2", manifest, FINAL, bootstrap=0)
    assert result["n"] == 2 and len(result["skipped"]) == 1
    assert result["predicted"] == ["Normal", "Bacterial Pneumonia"]
    assert stage2.markers() == [2]


def test_evaluate_two_stage_threshold_ends_and_a_softmax_screen(tmp_path: Path, monkeypatch) -> None:
    rows = [("Normal", 0.0, 0.5), ("Viral Pneumonia", 1.0, 0.9), ("Bacterial Pneumonia", 0.6, 0.2)]
    manifest = _write_images(tmp_path / "imgs", rows)
    for threshold, routed in [(0.0, [0, 1, 2]), (0.5, [1, 2]), (1.0, [1])]:
        stage2 = FileSpy((0, 1))
        _fake_stages(monkeypatch, FileSpy((0, 0), sigmoid=False), stage2)
        result = evaluate_two_stage("s1", "s2", manifest, FINAL, threshold=threshold, bootstrap=0)
        assert stage2.markers() == routed  # p >= threshold goes on, p < threshold never does
        assert [i for i, label in enumerate(result["predicted"]) if label != "Normal"] == routed
    with pytest.raises(ValueError, match="threshold"):
        evaluate_two_stage("s1", "s2", manifest, FINAL, threshold=1.5, bootstrap=0)


def test_routed_decisions_are_scored_once_with_their_interval(tmp_path: Path, monkeypatch) -> None:
    """p = 0.6, q = (0.5, 0.5) routes to stage 2 although the chain's argmax is Normal: the
    accuracy, confusion matrix and its interval are the routed labels', computed once."""
    from cxrlib.runs.metrics import compute_metrics

    rows = [("Bacterial Pneumonia", 0.6, 0.49), ("Normal", 0.1, 0.5), ("Viral Pneumonia", 0.9, 0.9)]
    manifest = _write_images(tmp_path / "imgs", rows)
    _fake_stages(monkeypatch, FileSpy((0, 0)), FileSpy((0, 1)))
    result = evaluate_two_stage("s1", "s2", manifest, FINAL, bootstrap=200, seed=3)
    probs = np.asarray(result["probabilities"])
    assert probs[0].argmax() == 0 and result["predicted"][0] == "Bacterial Pneumonia"
    assert result["accuracy"] == 1.0 and result["ci"]["accuracy"] == [1.0, 1.0]
    assert result["per_class"]["Bacterial Pneumonia"]["recall"] == 1.0
    by_argmax = compute_metrics(np.array([1, 0, 2]), probs, FINAL, bootstrap=200, seed=3)
    assert by_argmax["accuracy"] < 1.0 and by_argmax["auc_macro"] == result["auc_macro"]


@pytest.mark.slow
def test_evaluate_two_stage_with_real_runs(tmp_path: Path) -> None:
    """Two barely trained scratch CNNs saved by train(): records, preps and models load and chain."""
    from cxrlib.data.datasets import relabel
    from cxrlib.runs.train import train
    from cxrlib.spec import variant_spec

    rows = [(label, 0.5, 0.5) for label in FINAL for _ in range(4)]
    manifest = _write_images(tmp_path / "imgs", rows)
    manifest["split"] = ["train", "val", "test", "test"] * 3
    stage1_data = relabel(manifest, {c: "Pneumonia" for c in S2})
    stage2_data = manifest[manifest["label"] != "Normal"].reset_index(drop=True)
    kw = dict(image_size=32, epochs=1, batch_size=4)
    train(stage1_data, S1, variant_spec("scratch", "scratch", binary=True, channels=1, **kw),
          tmp_path / "s1", progress=False, bootstrap=0)
    train(stage2_data, S2, variant_spec("scratch", "scratch", **kw), tmp_path / "s2",
          progress=False, bootstrap=0)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    result = evaluate_two_stage(tmp_path / "s1", tmp_path / "s2", test, FINAL, bootstrap=0)
    assert result["n"] == 6 and len(result["predicted"]) == 6
    assert np.asarray(result["confusion_matrix"]).sum() == 6
    assert set(result["predicted"]) <= set(FINAL)
    routed = sum(label != "Normal" for label in result["predicted"])
    assert result["routed"] == routed
    # each model file is read once, and read again only when it changes
    first = load_run(tmp_path / "s1").model
    assert load_run(tmp_path / "s1" / "model.keras").model is first
    model_file = tmp_path / "s1" / "model.keras"
    os.utime(model_file, ns=(model_file.stat().st_atime_ns, model_file.stat().st_mtime_ns + 1))
    assert load_run(tmp_path / "s1").model is not first


def test_a_diverged_model_is_scored_not_a_crash(tmp_path: Path) -> None:
    """NaN outputs (a diverged run) count as uniform guesses, and the metrics say how many."""
    from cxrlib.runs.evaluate import evaluate

    manifest = _write_images(tmp_path / "imgs", [("Normal", 0.1, 0.5), ("Pneumonia", 0.9, 0.5)] * 2)

    def diverged(x, training=False):
        return np.full((len(x), 2), np.nan)

    diverged.output_shape = (None, 2)
    metrics = evaluate(diverged, manifest, S1, Prep(image_size=8, backbone="scratch", channels=1),
                       batch_size=2, bootstrap=0)
    assert metrics["non_finite_outputs"] == 4 and metrics["n"] == 4
    assert metrics["accuracy"] == 0.5  # every image "predicted" the first class
