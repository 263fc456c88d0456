"""Shared fixtures: the real samples in ../shared/data (skipped when absent), the session's
trained scratch CNN, quiet TensorFlow. Plain helpers are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import TRAIN_CLASSES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CXR_OFFLINE", "1")  # tests never wait on a download

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real sample {path} not present")
    return path


@pytest.fixture(scope="session")
def covid_sample() -> Path:
    """The real COVID-19 Radiography Database sample (Kaggle v4 layout, 3 x 300 PNGs)."""
    return _shared("covid19-radiography-sample")


@pytest.fixture(scope="session")
def pneumonia_sample() -> Path:
    """The real Kermany pneumonia sample (class folders, 3 x 200 JPEGs)."""
    return _shared("pneumonia-sample")


@pytest.fixture(scope="session")
def scratch_run(tmp_path_factory) -> tuple[Path, "object"]:
    """(run folder, split manifest) of a scratch CNN trained at 64 px on an easy synthetic set
    (:data:`helpers.TRAIN_CLASSES`, 80 films each, lesion masks), once a session: Grad-CAM's
    tests (test_explain.py) and diagnosis' first stage (test_diagnose.py) share it."""
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.splits import split_manifest
    from cxrlib.data.synthetic import generate_synthetic
    from cxrlib.runs.train import train
    from cxrlib.spec import NO_AUGMENT, variant_spec

    base = tmp_path_factory.mktemp("cxr_trained_scratch")
    generate_synthetic(base / "data", per_class=80, size=64, seed=0, classes=TRAIN_CLASSES,
                       severity=(1.0, 1.3), marker_prob=0.0, vary_size=False, progress=False)
    manifest = split_manifest(load_manifest(base / "data"), val=0.15, test=0.25, seed=0)
    spec = variant_spec("scratch", "scratch", image_size=64, epochs=10, batch_size=16,
                        optimizer="adam", learning_rate=1e-3, seed=0, augment=NO_AUGMENT)
    train(manifest, TRAIN_CLASSES, spec, base / "run", progress=False, bootstrap=100)
    return base / "run", manifest


# The longest modules first (measured with --durations, 2026-12-02), so that pytest-xdist's
# loadscope scheduler, which hands out modules in collection order, starts them at once on
# different workers instead of leaving one of them to the end of a busy worker.
LONGEST_FIRST = ("test_notebooks.py", "test_training.py", "test_presets.py", "test_pretrain.py")


def pytest_collection_modifyitems(config, items) -> None:
    """Reorder the collected tests: the modules of LONGEST_FIRST, in that order, then the rest."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
