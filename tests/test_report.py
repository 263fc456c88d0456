"""The report: a comparison table and figures generated from run records only."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from helpers import make_record, scored
from matplotlib.figure import Figure

from cxrlib import plots
from cxrlib.runs.metrics import compute_metrics
from cxrlib.runs.records import find_records, write_record
from cxrlib.runs.report import TABLE_COLUMNS, comparison_table, markdown_table, model_names, write_report

CLASSES = ["normal", "pneumonia"]


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """Two runs: "Later" (no test set, no validation) written first, then "Earlier" (tested)."""
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 10)
    p = np.clip(0.35 * y + 0.65 * rng.random(20), 0, 1)
    test = compute_metrics(y, np.stack([1 - p, p], axis=1), CLASSES, bootstrap=100)
    runs_dir = tmp_path / "runs"
    write_record(runs_dir / "b", make_record(
        "Later", "2024-06-02T10:00:00+00:00", classes=CLASSES, epochs=2, wall=30.0,
        final={"loss": 0.25, "accuracy": 0.95, "val_loss": None, "val_accuracy": None}))
    write_record(runs_dir / "a", make_record(
        "Earlier", "2024-06-01T10:00:00+00:00", classes=CLASSES, epochs=3, wall=12.25,
        final={"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7}, test=test))
    return runs_dir


def test_table_has_the_right_numbers_in_the_right_columns() -> None:
    first = make_record("M1", "2024-01-01T00:00:00", epochs=3, wall=10.0,
                        final={"loss": 0.4, "accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.85},
                        test=scored(0.8, auc_macro=0.88))
    second = make_record("M2", "2023-01-01T00:00:00", epochs=2, wall=20.5,
                         final={"loss": 0.3, "accuracy": 0.95, "val_loss": None, "val_accuracy": 0.9})
    table = comparison_table([first, second])
    assert list(table.columns) == TABLE_COLUMNS
    assert table["Model"].tolist() == ["M1", "M2"]  # record order, not date order
    assert table.loc[0, ["Loss", "Accuracy", "Validation Loss", "Validation Accuracy",
                         "Test Accuracy", "Test AUC", "Wall time (s)"]].tolist() == \
        [0.4, 0.9, 0.5, 0.85, 0.8, 0.88, 10.0]
    assert table["Epochs"].tolist() == [3, 2]
    assert math.isnan(table.loc[1, "Validation Loss"])
    assert math.isnan(table.loc[1, "Test Accuracy"]) and math.isnan(table.loc[1, "Test AUC"])
    assert table.loc[1, "Validation Accuracy"] == 0.9
    assert comparison_table([]).columns.tolist() == TABLE_COLUMNS


def test_repeated_names_are_told_apart_by_their_run_directory(tmp_path: Path) -> None:
    final = {"loss": 0.4, "accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.85}
    runs_dir = tmp_path / "results"
    for folder, name, day in (("05/cnn", "CNN-scratch", 1), ("06/cnn", "CNN-scratch", 2),
                              ("03/v1", "DN-V1", 3)):
        write_record(runs_dir / folder, make_record(name, f"2024-01-0{day}T00:00:00", final=final,
                                                    epochs=2, wall=1.0))
    records = find_records(runs_dir)
    assert model_names(records) == ["CNN-scratch [05/cnn]", "CNN-scratch [06/cnn]", "DN-V1"]
    written = write_report(runs_dir)
    assert pd.read_csv(written["table.csv"])["Model"].tolist() == model_names(records)
    assert {"figures/CNN-scratch_05_cnn_curves.png", "figures/CNN-scratch_06_cnn_curves.png"} <= set(written)
    unsaved = [make_record("A", "2024-01-01T00:00:00", final=final, epochs=1, wall=1.0)] * 2  # records never read from disk
    assert model_names(unsaved) == ["A [#1]", "A [#2]"]


def test_markdown_table_formatting() -> None:
    frame = pd.DataFrame({"Model": ["a|b", "c"], "Accuracy": [0.91234, np.nan],
                          "Epochs": pd.array([3, None], dtype="Int64")})
    rows = _cells(markdown_table(frame))
    assert rows[0] == ["Model", "Accuracy", "Epochs"]
    assert [cell.startswith(":") or cell.endswith(":") for cell in rows[1]] == [True] * 3
    assert [cell.endswith(":") for cell in rows[1]] == [False, True, True]  # numbers right-aligned
    assert rows[2:] == [["a\\|b", "0.912", "3"], ["c", "—", "—"]]


def _cells(markdown: str) -> list[list[str]]:
    """The stripped cells of each row of a Markdown table (an escaped ``\\|`` stays in its cell)."""
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in markdown.splitlines()]


def test_write_report_writes_table_and_figures(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    written = write_report(runs, out)
    assert set(written) == {"table.md", "table.csv", "figures/comparison.png",
                            "figures/Earlier_curves.png", "figures/Earlier_confusion.png",
                            "figures/Earlier_roc.png", "figures/Later_curves.png"}
    for path in written.values():
        assert path.is_file() and path.stat().st_size > 0 and out in path.parents
    csv = pd.read_csv(out / "table.csv")
    assert csv["Model"].tolist() == ["Earlier", "Later"]  # oldest run first
    assert csv.loc[0, "Wall time (s)"] == 12.25 and csv.loc[1, "Epochs"] == 2
    assert 0 <= csv.loc[0, "Test Accuracy"] <= 1 and math.isnan(csv.loc[1, "Test Accuracy"])
    rows = _cells((out / "table.md").read_text())
    assert rows[2][:5] == ["Earlier", "0.500", "0.800", "0.600", "0.700"]
    assert rows[3][:9] == ["Later", "0.250", "0.950", "—", "—", "—", "2", "—", "30.000"]
    assert plt.get_fignums() == []  # nothing left open in pyplot


def test_write_report_defaults_to_the_runs_directory(runs: Path) -> None:
    written = write_report(runs)
    assert written["table.md"] == runs / "table.md"


def test_no_records_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No valid run records"):
        write_report(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "record.json").write_text("{}")  # invalid records do not count
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path)


def test_every_plot_returns_a_figure_and_saves_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(4)]
    table = pd.DataFrame({"Model": ["a", "b"], "Test Accuracy": [0.7, 0.9]})
    figures = {
        "history": plots.plot_history({"loss": [1, 0.5], "val_loss": [1.1, None],
                                       "accuracy": [0.5, 0.8]}, title="t"),
        "confusion": plots.plot_confusion([[5, 1, 0], [2, 3, 1], [0, 0, 0]], ["a", "b", "c"]),
        "confusion_counts": plots.plot_confusion(np.eye(2, dtype=int), ["a", "b"],
                                                 normalize=False),
        "roc": plots.plot_roc({"b": {"fpr": [0, 0.2, 1], "tpr": [0, 0.9, 1], "auc": 0.85}},
                              operating_point={"threshold": 0.3, "sensitivity": 0.99,
                                               "specificity": 0.5, "target": 0.99}),
        "comparison": plots.plot_comparison(table, ci={"b": (0.85, 0.95)}, chance=1 / 3),
        "grid": plots.image_grid(images + [np.zeros((16, 16, 1))], titles=list("abcde"), ncols=3),
        "counts": plots.plot_class_counts(["a", "b", "b", "c"]),
        "sizes": plots.plot_size_histograms([100, 200, 300], [90, 180, 310]),
        "intensity": plots.plot_intensity_histograms({"a": images[:2], "b": images[2:],
                                                      "c": [images[0]]}),
    }
    for name, figure in figures.items():
        assert isinstance(figure, Figure), name
        path = plots.save_figure(figure, tmp_path / "deep" / f"{name}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
    annotations = [t.get_text() for t in figures["confusion"].axes[0].texts]
    assert "5\n83%" in annotations and "0\n0%" in annotations
    saved = plots.plot_class_counts(["x"], save=tmp_path / "new" / "counts.png")
    assert isinstance(saved, Figure) and (tmp_path / "new" / "counts.png").stat().st_size > 0
    assert plt.get_fignums() == []
