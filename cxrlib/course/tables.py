"""The course presets as text: the README's course tables and ``cxr presets``' listing.

Both are built from the presets and their reports' tables (:mod:`cxrlib.course.reports`),
never typed by hand; ``tests/test_presets.py`` checks that the README holds exactly what
:func:`readme_tables` gives.
"""

from __future__ import annotations

from cxrlib.course.presets import PRESETS, Preset, describe_augment, differences, run_size
from cxrlib.course.reports import report_of
from cxrlib.spec import flat_items

RESULT_LABELS = {"loss": "loss", "accuracy": "acc.", "val_loss": "val. loss", "val_accuracy": "val. acc.",
                 "test_loss": "test loss", "test_accuracy": "test acc.", "epochs_run": "epochs run"}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "/")


def preset_markdown(preset: Preset) -> str:
    """A preset as markdown: its runs' main settings and every number its report gives."""
    report = report_of(preset.name)
    results = [name for name in RESULT_LABELS if any(name in r.reported for r in preset.runs)]
    header = ["run", "backbone", "variant", "head", "size", "epochs", "optimiser", "lr",
              "normalisation", "augmentation", *[f"reported {RESULT_LABELS[n]}" for n in results]]
    lines = [f"### {preset.course} (`{preset.name}`, notebook {preset.notebook})", "",
             f"Report: `../shared/courses/{report.file}`. Split: {split_text(preset)}.", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in preset.runs:
        spec = run.spec
        row = [run.key + (f" (from {run.init_from})" if run.init_from else ""), spec.backbone,
               spec.variant, spec.head, run_size(preset, run), spec.epochs, spec.optimizer,
               spec.learning_rate, spec.normalization, describe_augment(spec.augment),
               *[run.reported.get(n) for n in results]]
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if preset.findings:
        lines += ["", "Also reported: " + "; ".join(f"{name.replace('_', ' ')} {_cell(value)}"
                                                   for name, value in preset.findings.items()) + "."]
    changed = differences(preset)
    if changed:
        lines += ["", "Where this preset departs from the report:", ""] + [f"- {line}" for line in changed]
    if preset.assumed:
        lines += ["", f"Not in the report (our choice): {preset.assumed}"]
    return "\n".join(lines)


def split_text(preset: Preset) -> str:
    """The main data set's split in words."""
    split = preset.split
    parts = ["the official test split" if split.official_test else f"{split.test:.0%} test"]
    parts.append(f"{split.val:.0%} of the rest for validation")
    if split.samples_per_class:
        parts.insert(0, f"{split.samples_per_class} films per class")
    if split.pinned:
        parts.insert(0, f"database {split.pinned}")
    return ", ".join(parts)


def readme_tables() -> str:
    """Every preset's markdown, as the README's ``## The courses`` section holds it."""
    return "\n\n".join(preset_markdown(p) for p in PRESETS.values())


def spec_lines(preset: Preset) -> str:
    """A preset as plain text: each run with its full spec (``cxr presets``)."""
    lines = [f"{preset.name}: {preset.course} (notebooks {preset.notebook}; "
             f"report {report_of(preset.name).file})"]
    for run in preset.runs:
        lines.append(f"  {run.key}" + (f"  (starts from {run.init_from})" if run.init_from else "")
                     + (f"  [data: {run.data}]" if run.data != "main" else ""))
        settings = flat_items(run.spec)
        lines += [f"    {name} = {settings[name]!r}" for name in settings]
        if run.reported:
            lines.append("    reported: " + ", ".join(f"{k} {v:g}" for k, v in run.reported.items()))
    return "\n".join(lines)


def course_notes(preset: Preset, keys=None) -> str:
    """What a notebook says under its preset table: the course and its report, what this run's
    scaling changed and why, where the preset departs from the report, and what the report
    leaves open. All of it from the preset (``keys``: only those runs' departures)."""
    lines = [f"**{preset.course}**, from its report `../shared/courses/{report_of(preset.name).file}`. "
             f"Split: {split_text(preset)}."]
    if preset.scaling:
        lines.append("**This run is not at course settings:** " + "; ".join(preset.scaling) + ".")
    else:
        lines.append("**This run is at course settings.**")
    chosen = [r for r in preset.runs if keys is None or r.key in keys]
    departs = [line for line in differences(preset) if line.split(":")[0] in {r.key for r in chosen}]
    if departs:
        lines.append("**Where the preset departs from the report:** " + " ".join(f"{d}." for d in departs))
    if preset.assumed:
        lines.append(f"**Not in the report** (our choice): {preset.assumed}")
    return "\n\n".join(lines)
