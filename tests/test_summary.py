"""The demo's last screen (cxrlib.course.summary): the lesson's table and its verdicts, from
synthetic records; and ``cxr report --summary`` over them."""

from __future__ import annotations

import math
from pathlib import Path

from helpers import make_record, scored

from cxrlib.course import summary as sm
from cxrlib.runs.records import RunRecord


def _record(run: str, backbone: str, variant: str, accuracy: float | None, preset: str | None = "radiography",
            root: str = "", n_test: int = 60, image_size: int = 64) -> RunRecord:
    """Run ``run`` of ``preset`` (none: trained with ``cxr train``): 300 films, 10 epochs."""
    return make_record(f"{backbone}-{variant}", backbone=backbone, variant=variant, epochs=10, wall=5.0,
                       test=None if accuracy is None else scored(accuracy, n=n_test),
                       dataset={"root": root, "n_train": 210, "n_val": 30, "n_test": n_test,
                                **({"preset": preset, "run": run} if preset else {})},
                       model={"weights": "synthetic", "image_size": image_size})


def lesson(v0=0.35, v1=0.93, v3=0.95, frozen=(0.9, 0.78, 0.85, 0.83, 0.91), **options) -> list[RunRecord]:
    records = [_record("v0", "densenet121", "v0", v0, **options),
               _record("v1", "densenet121", "v1", v1, **options),
               _record("v2", "densenet121", "v2", 0.88, **options),
               _record("v2reg", "densenet121", "v2reg", frozen[0], **options),
               _record("v3", "densenet121", "v3", v3, **options)]
    for backbone, accuracy in zip(("resnet50", "vgg16", "inceptionv3", "xception"), frozen[1:]):
        records.append(_record(f"{backbone}-frozen", backbone, "frozen", accuracy, **options))
    return records


def test_the_lesson_table_has_its_ten_rows_with_intervals() -> None:
    other = _record("inceptionv3", "inceptionv3", "frozen", 0.2, preset="kermany-transfer")
    table = sm.lesson_table([*lesson(), other])
    assert list(table["run"]) == [row for row, *_ in sm.LESSON_ROWS]
    acc = dict(zip(table["run"], table["test accuracy"]))
    assert acc["DN-V0 (untrained head)"] == 0.35 and acc["DN-V3 (fine-tuned)"] == 0.95
    assert acc["DenseNet121 frozen (= DN-V2-reg)"] == acc["DN-V2-reg"] == 0.9
    assert acc["InceptionV3 frozen"] == 0.83            # not the other course's InceptionV3
    row = table.set_index("run").loc["VGG16 frozen"]
    assert math.isclose(row["low"], 0.75) and math.isclose(row["high"], 0.90) and row["test films"] == 60


def test_a_later_run_replaces_an_earlier_one_and_records_without_a_preset_count() -> None:
    records = [*lesson(), _record("v1", "densenet121", "v1", 0.5)]
    assert sm.lesson_table(records).set_index("run").loc["DN-V1", "test accuracy"] == 0.5
    loose = sm.lesson_table(lesson(preset=None))   # trained with `cxr train`, no preset
    assert loose["test accuracy"].notna().all()


def test_verdicts_when_every_lesson_holds() -> None:
    verdicts = sm.lesson_verdicts(sm.lesson_table(lesson()))
    assert [v.lesson for v in verdicts] == ["Frozen features beat chance", "Training the head helps",
                                            "Fine-tuning keeps or improves"]
    assert all(v.held is True for v in verdicts)
    assert "lowest ResNet50 frozen 0.780" in verdicts[0].detail


def test_verdicts_against_each_bar() -> None:
    def held(**accuracies) -> list:
        return [v.held for v in sm.lesson_verdicts(sm.lesson_table(lesson(**accuracies)))]

    assert held(frozen=(0.9, 0.69, 0.85, 0.83, 0.91)) == [False, True, True]   # one backbone < 0.70
    assert held(v0=0.46) == [True, False, True]                                # V0 above 0.45
    assert held(v1=0.79, v3=0.79) == [True, False, True]                       # V1 below 0.80
    assert held(v1=0.93, v3=0.88) == [True, True, True]                        # V1 − 0.05 exactly
    assert held(v1=0.93, v3=0.87) == [True, True, False]
    missing = sm.lesson_verdicts(sm.lesson_table(lesson()[:3]))
    assert [v.held for v in missing] == [None, True, None]
    assert "not measured: DN-V3 (fine-tuned)" in missing[2].detail


def test_trained_on_says_synthetic_or_real(tmp_path: Path) -> None:
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    (synthetic / "synthetic.json").write_text("{}")
    assert sm.trained_on(lesson(root=str(synthetic))) == \
        "the synthetic stand-in, 300 films, 64 px, 10 epochs, weights synthetic"
    real = tmp_path / "real"
    real.mkdir()
    assert sm.trained_on(lesson(root=str(real))).startswith("the real data, 300 films")
    mixed = [*lesson(root=str(real), image_size=224)[:2], *lesson(root=str(real), image_size=299)[:2]]
    assert "224–299 px" in sm.trained_on(mixed)


def test_the_summary_text(tmp_path: Path) -> None:
    text = sm.demo_summary(lesson(v3=0.5), report_dir=tmp_path / "report", notebooks_dir=tmp_path / "nb",
                           started=0.0, files_written=65)
    assert "(9 of 9 runs)" in text and "DN-V0 (untrained head)" in text and "0.250–0.400" in text
    assert "✓ held" in text and "✗ did not hold  Fine-tuning keeps or improves" in text
    assert "Took " in text and "jupyter lab" in text and "table.md" in text and "the 65 files" in text


def test_cli_report_summary_lists_files_in_a_file(tmp_path: Path, capsys, monkeypatch) -> None:
    import cxrlib.runs.records
    import cxrlib.runs.report
    from cxrlib.apps.cli import main

    def write_report(runs_dir, out_dir) -> dict:   # the report itself is test_report.py's
        return {f"figures/{i}.png": Path(out_dir) / f"figures/{i}.png" for i in range(65)}

    monkeypatch.setattr(cxrlib.runs.records, "find_records", lambda _: lesson())
    monkeypatch.setattr(cxrlib.runs.report, "write_report", write_report)
    (tmp_path / "report").mkdir()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report"), "--summary",
                 "--notebooks", str(tmp_path / "nb"), "--started", "0"]) == 0
    shown = capsys.readouterr().out
    assert "What the demo showed" in shown and "Did each lesson hold (chance 0.333)?" in shown
    assert "figures/3.png" not in shown and "the 65 files" in shown
    listed = (tmp_path / "report" / "files.txt").read_text().splitlines()
    assert len(listed) == 65 and listed[0].endswith("figures/0.png")


def test_the_chart_against_a_course_says_what_ours_is_and_keeps_its_legend_off_the_bars() -> None:
    import pandas as pd

    from cxrlib.course.reproduce import plot_against_course

    table = pd.DataFrame({"ours: test accuracy": [0.95, 0.9], "course: test accuracy": [0.625, 0.868]},
                         index=pd.Index(["cnn", "inceptionv3"], name="run"))
    figure = plot_against_course(table, ours="ours: the synthetic stand-in, 300 films, 64 px, 10 epochs")
    ax = figure.axes[0]
    legend = ax.get_legend()
    texts = [t.get_text().replace("\n", " ") for t in legend.get_texts()]
    assert texts[0].startswith("ours: the synthetic stand-in, 300 films, 64 px, 10 epochs")
    assert any("course" in text for text in texts[1:])
    figure.canvas.draw()
    box = legend.get_window_extent()
    assert not any(box.overlaps(bar.get_window_extent()) for bar in ax.patches)
