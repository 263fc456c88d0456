"""Reproduce a course preset: its data (real where given, synthetic for the rest), its runs,
and its results table with the course's reported number beside ours.

- :func:`dataset_folder`: a notebook's dataset folder from its parameter or the environment
  (``COVID_DIR``, ``KERMANY_DIR``, ``SIIM_DIR``, ``EXTERNAL_DIR``).
- :func:`preset_data`: every data set a preset's runs train on, split by
  :func:`cxrlib.data.splits.make_split` with the preset's shares (Kermany: official test).
- :func:`train_preset`: every run of a preset, each with its record.
- :func:`comparison`: ours against the course's numbers, from the records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from cxrlib.course.presets import FOLDER_VARIABLES, KERMANY_CLASSES, Preset, run_info, run_spec
from cxrlib.course.progression import pin_version, train_or_reuse
from cxrlib.data.splits import make_split, sample_per_class
from cxrlib.environment import env_path
from cxrlib.runs.records import RunRecord, record_float
from cxrlib.spec import Split

log = logging.getLogger(__name__)

SIIM_BINARY = {"Negative": "No Opacity", "Typical": "Opacity", "Indeterminate": "Opacity",
               "Atypical": "Opacity"}
EXTERNAL_BINARY = {"COVID": "Opacity", "Viral Pneumonia": "Opacity", "Lung Opacity": "Opacity",
                   "Normal": "No Opacity"}


def dataset_folder(dataset: str, given: str | None = None) -> Path | None:
    """The folder of ``dataset``: the notebook's parameter, else its environment variable
    (:data:`FOLDER_VARIABLES`); ``None`` when neither names an existing folder."""
    folder = env_path(FOLDER_VARIABLES[dataset], given)
    if folder and folder.is_dir():
        return folder
    if folder:
        print(f"{FOLDER_VARIABLES[dataset]}={folder} was not found.")
    return None


def _say_synthetic(dataset: str, path: Path) -> None:
    print(f"{FOLDER_VARIABLES[dataset]} not given: using the SYNTHETIC stand-in in {path}. The "
          "lessons run the same; the numbers are about procedural images, not patients.")


def radiography_manifest(folder: Path | None, work_dir: Path, per_class: int, size: int,
                         seed: int = 0, version: str | None = None,
                         classes: Sequence[str] = ("COVID", "Normal", "Viral Pneumonia")) -> pd.DataFrame:
    """The Radiography images of ``classes`` (those present), pinned to ``version`` when real;
    synthetic when ``folder`` is None."""
    from cxrlib.course.setup import course_data
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.render import SYNTH_CLASSES

    path, real = course_data(folder, work_dir / "synthetic", per_class=per_class, size=size,
                             seed=seed, classes=[c for c in classes if c in SYNTH_CLASSES])
    if not real:
        _say_synthetic("covid19-radiography", path)
    manifest = load_manifest(path)
    manifest = manifest[manifest["label"].isin(classes)].reset_index(drop=True)
    return pin_version(manifest, version, seed) if real else manifest


def kermany_manifest(folder: Path | None, work_dir: Path, per_class: int, size: int,
                     seed: int = 0) -> pd.DataFrame:
    """Kermany's images labelled Normal / Bacterial Pneumonia / Viral Pneumonia, with the
    official split where the data has one (synthetic when ``folder`` is None)."""
    from cxrlib.course.setup import course_data
    from cxrlib.data.datasets import load_manifest

    path, real = course_data(folder, work_dir / "synthetic_kermany", per_class=per_class,
                             size=size, seed=seed, classes=KERMANY_CLASSES)
    if not real:
        _say_synthetic("kermany", path)
    manifest = load_manifest(path)
    if manifest.attrs.get("layout") == "kermany":   # the kind of pneumonia is in the file name
        manifest["label"] = manifest["subtype"].where(manifest["label"] == "Pneumonia", manifest["label"])
    manifest = manifest[manifest["label"].isin(KERMANY_CLASSES)].reset_index(drop=True)
    if not real:   # balanced by construction: keep two normal films in three, about 1 : 3 overall
        normal = manifest.index[manifest["label"] == "Normal"]
        manifest = manifest.drop(normal[: len(normal) // 3]).reset_index(drop=True)
    return manifest


def siim_manifest(folder: Path | None, work_dir: Path, n_studies: int, size: int,
                  seed: int = 0) -> pd.DataFrame:
    """SIIM's images with their study-level class (``label``), synthetic when ``folder`` is None."""
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.siim_synthetic import generate_siim_like

    path = folder
    if path is None:
        path = generate_siim_like(work_dir / "synthetic_siim", n_studies=n_studies, size=size, seed=seed)
        _say_synthetic("siim", path)
    return load_manifest(path, layout="siim", target="study")


def preset_data(preset: Preset, work_dir: str | Path, folders: Mapping[str, str | None] | None = None,
                per_class: int | None = None, size: int = 256, seed: int = 0
                ) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """Every data set the preset's runs train on: name → (split manifest, classes).

    ``folders`` maps dataset names (``covid19-radiography``, ``kermany``, ``siim``,
    ``external``) to folders; what is missing comes from the environment, else synthetic.
    ``per_class`` caps the images per class (synthetic size, or a quick look at real data).
    """
    from cxrlib.data.datasets import relabel

    work = Path(work_dir)
    folder = {name: dataset_folder(name, (folders or {}).get(name)) for name in FOLDER_VARIABLES}
    n = per_class or 300

    def capped(frame: pd.DataFrame) -> pd.DataFrame:
        return sample_per_class(frame, per_class, seed=seed) if per_class else frame

    if preset.dataset == "covid19-radiography":
        manifest = capped(radiography_manifest(folder["covid19-radiography"], work, n, size, seed,
                                               preset.version, preset.classes))
        return {"main": (make_split(manifest, preset.split, seed), list(preset.classes))}
    if preset.dataset == "kermany":
        split = make_split(capped(kermany_manifest(folder["kermany"], work, n, size, seed)), preset.split, seed)
        binary = relabel(split, {"Bacterial Pneumonia": "Pneumonia", "Viral Pneumonia": "Pneumonia"})
        pneumonia = split[split["label"] != "Normal"].reset_index(drop=True)
        return {"main": (split if len(preset.classes) == 3 else binary, list(preset.classes)),
                "stage1": (binary, ["Normal", "Pneumonia"]),
                "stage2": (pneumonia, ["Bacterial Pneumonia", "Viral Pneumonia"])}
    if preset.dataset == "siim":
        return _siim_data(preset, folder, work, n, size, seed, capped)
    raise ValueError(f"No data recipe for dataset {preset.dataset!r}.")


def _siim_data(preset: Preset, folder: Mapping[str, Path | None], work: Path, n: int, size: int,
               seed: int, capped) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """The SIIM course's four data sets, as its report splits them: the competition's films
    split 80/20 for the study and opacity runs (validation only); for the union, a fifth of
    the competition's films held out as the final test, the rest joined with the external
    films and split 80/20; and phase 3's competition films without a validation share, tested
    on the same held-out fifth."""
    from cxrlib.data.datasets import relabel

    splits = {run.data: run.spec.split for run in preset.runs}
    studies = capped(siim_manifest(folder["siim"], work, 4 * n, size, seed))
    study_split = make_split(studies, splits["study"], seed)
    held = make_split(studies, Split(val=0.0, test=splits["union"].test), seed)
    competition = relabel(held, SIIM_BINARY)
    external = radiography_manifest(folder["external"], work / "external", n, size, seed,
                                    classes=tuple(EXTERNAL_BINARY))
    external = relabel(capped(external), EXTERNAL_BINARY).assign(split="train")
    pool = pd.concat([external, competition[competition["split"] == "train"]], ignore_index=True)
    union = make_split(pool, Split(val=splits["union"].val, test=0.0), seed)
    union = pd.concat([union, competition[competition["split"] == "test"]], ignore_index=True)
    union.attrs = dict(competition.attrs)
    return {"study": (study_split, sorted(SIIM_BINARY)),
            "main": (relabel(study_split, SIIM_BINARY), list(preset.classes)),
            "union": (union, list(preset.classes)),
            "competition": (competition, list(preset.classes))}


def preset_dirs(preset: Preset, results_dir: str | Path) -> dict[str, Path]:
    """Where each run of the preset lives: ``RESULTS/<preset>/<run>``."""
    return {key: Path(results_dir) / preset.name / key for key in preset.keys()}


def train_preset(preset: Preset, data: Mapping[str, tuple[pd.DataFrame, list[str]]],
                 results_dir: str | Path, weights: str | None = "imagenet", seed: int = 0,
                 only: Sequence[str] | None = None, **options: Any) -> dict[str, RunRecord]:
    """Train (or reuse) the preset's runs in order; run key → record.

    ``options`` go to :func:`cxrlib.runs.train.train` (``progress``, ``bootstrap``, ``callbacks``).
    """
    from cxrlib.course.setup import usable_weights

    dirs = preset_dirs(preset, results_dir)
    records = {}
    for run in preset.runs:
        if only and run.key not in only:
            continue
        manifest, classes = data[run.data]
        spec = run_spec(preset, run.key, dirs)
        if spec.backbone != "scratch":
            spec = spec.model_copy(update={"weights": usable_weights(weights, spec.backbone)})
        spec = spec.model_copy(update={"seed": seed})
        records[run.key], how = train_or_reuse(manifest, classes, spec, dirs[run.key],
                                               name=f"{preset.name}: {run.key}",
                                               dataset_info=run_info(preset, run.key), **options)
        print(f"{run.key:<28} {how:>7}: {_headline(records[run.key])}")
    return records


def _headline(record: RunRecord) -> str:
    """A run's test accuracy, or its validation accuracy when it has no test split."""
    if record.test and record.test.accuracy is not None:
        return f"test accuracy {record.test.accuracy:.3f}"
    return f"validation accuracy {record_float(record, 'final', 'val_accuracy'):.3f}"


RESULT_SOURCES: dict[str, tuple[str, str]] = {
    "test_accuracy": ("test", "accuracy"), "test_loss": ("test", "loss"),
    "loss": ("final", "loss"), "accuracy": ("final", "accuracy"),
    "val_loss": ("final", "val_loss"), "val_accuracy": ("final", "val_accuracy"),
    "epochs_run": ("training", "epochs_run")}
"""Where a record keeps each number a report gives (see :mod:`cxrlib.course.reports`), as
:func:`cxrlib.runs.records.record_float` reads it."""


def comparison(preset: Preset, records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Ours beside the course's, one row per run given, from the records and the report: every
    number the report gives for the run (test, or validation where it reported validation),
    and the test accuracy always."""
    rows = []
    for run in (r for r in preset.runs if r.key in records):
        record = records[run.key]
        row: dict[str, Any] = {"run": run.key}
        for name in ("test_accuracy", *[n for n in RESULT_SOURCES if n != "test_accuracy"]):
            if name == "test_accuracy" or name in run.reported:
                label = name.replace("_", " ")
                row[f"ours: {label}"] = record_float(record, *RESULT_SOURCES[name])
                row[f"course: {label}"] = run.reported.get(name)
        row["test images"] = record.test.n if record.test else None
        rows.append(row)
    table = pd.DataFrame(rows).set_index("run")
    return table.dropna(axis=1, how="all")


def plot_against_course(table: pd.DataFrame, title: str = "", save: str | Path | None = None,
                        ours: str = "ours"):
    """Bars of our test accuracy beside the course's, one pair per run (a :func:`comparison`),
    and the validation accuracies too where the course reported validation (SIIM).

    ``ours`` labels our bars with what our runs were trained on, e.g. "ours: the synthetic
    stand-in, 300 films, 64 px, 10 epochs" (:func:`cxrlib.course.summary.trained_on`); the
    legend sits beside the bars, never over them.
    """
    import textwrap

    import matplotlib.pyplot as plt

    from cxrlib.plots import save_figure

    labels = {"ours: test accuracy": textwrap.fill(ours + " (test)", 32),
              "course: test accuracy": "the course (reported, test)",
              "ours: val accuracy": textwrap.fill(ours + " (validation)", 32),
              "course: val accuracy": "the course (reported, validation)"}
    columns = [c for c in labels if c in table]
    figure, ax = plt.subplots(figsize=(2.0 + 1.1 * len(table), 3.2))
    table[columns].astype(float).rename(columns=labels).plot.bar(
        ax=ax, rot=30, color=["tab:blue", "tab:gray", "tab:cyan", "silver"][:len(columns)], legend=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    figure.tight_layout()
    if save:
        save_figure(figure, save)
    plt.close(figure)
    return figure
