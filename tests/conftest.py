"""Shared fixtures: the real samples in ../shared/data (skipped when absent), quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


# The longest modules first (measured with --durations, 2026-12-02), so that pytest-xdist's
# loadscope scheduler, which hands out modules in collection order, starts them at once on
# different workers instead of leaving one of them to the end of a busy worker.
LONGEST_FIRST = ("test_notebooks.py", "test_training.py", "test_presets.py", "test_pretrain.py")


def pytest_collection_modifyitems(config, items) -> None:
    """Reorder the collected tests: the modules of LONGEST_FIRST, in that order, then the rest."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
