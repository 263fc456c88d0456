"""A notebook's conclusions: short markdown templates, filled with numbers from its run records.

Each template is markdown with ``{placeholders}``; a ``*_facts`` function computes the values
from records or tables, and :func:`conclusions` fills the template. A line whose placeholder
has no value (a run that is missing, a number that is NaN) is left out, so the conclusions
say only what this run measured. A ``{when_…}`` placeholder is empty text: its line is shown
only when the facts hold it (the way to write "one sentence or the other").
"""

from __future__ import annotations

import math
from string import Formatter
from typing import Any, Mapping, Sequence

import pandas as pd

from cxrlib.runs.records import RunRecord, record_float
from cxrlib.variants import canonical_variant

PROGRESSION = """
- {v0} (the untrained softmax) scores **{v0_test:.3f}** on the test set; chance is {chance:.3f}.
- Test accuracy, one version after the other: {steps}.
- Train − validation accuracy gap in the last epoch: {v2_gap:+.3f} for {v2}, {v2reg_gap:+.3f} for {v2reg}; dropout's gap is {dropout_gap}. Dropout is active when the training accuracy is measured, so it lowers that number too.
- Best test accuracy: **{best}** with {best_test:.3f}.
"""

BACKBONES = """
- Best test accuracy: **{best}** with {best_test:.3f} (95 % bootstrap interval {best_low:.3f}–{best_high:.3f}).
- Intervals overlapping the best one's: {overlapping}. This test set cannot rank these models reliably.
- {when_clear_lead}No other model's interval reaches the best one's: the lead is larger than the test set's uncertainty.
- What fine-tuning changed: {finetune_changes}.
- Fastest to train: {fastest} ({fastest_s:.0f} s); slowest: {slowest} ({slowest_s:.0f} s), on this run's hardware.
"""

HEATMAPS = """
- Lesion energy of {subject} ({n} test images with a lesion): {lesion_best} puts the most of its map on the lesions, {lesion_energy:.2f}, against {lesion_random:.2f} for a random map and a lesion area of {lesion_area:.2f}.
- At least {min_ratio}× the random map's lesion energy: {beat}; not: {fail}. A method that does not beat a random map tells you nothing about this model, however convincing its picture looks.
- Pointing game: {pointing_best}'s peak lands on the lesion in {pointing_rate:.2f} of the images (a random map: {pointing_random:.2f}).
- No lesion masks here, so no lesion score: border and lung shares only ({subject}, {n_regions} test images).
- {border_best} puts the most of its map in the border band, {border_share:.2f} (a random map {border_random:.2f}); a share well above the random map's means evidence outside the patient.
- Cost: {slowest} took {slowest_s:.1f} s for the whole set, {fastest} {fastest_s:.1f} s.
- With {few_images} images these means move by several points from one draw to the next: compare methods only where they differ clearly.
- Per class ({subject}), {class_top} films have the most heat in the border band ({class_top_share:.2f}; random map {class_random:.2f}). A class whose evidence sits in the border deserves a look at its films: markers, text, cables.
- Shortcut model: accuracy {marked:.2f} on marked films, {marker_free:.2f} on the same films without the marker (chance {shortcut_chance:.2f}); share of its heat map on the marker {marker_share:.2f} against the marker's area {marker_area:.2f}.
- Removing the marker cost the shortcut model {drop:.2f} of accuracy: it had learnt the marker, and its accuracy on marked films overstated what it knows about the lungs.
- {when_no_shortcut}The shortcut did not show in this run ({shortcut_per_class} films per class, {shortcut_epochs} epochs): too little training for the model to learn anything, marker or lungs. The demo and course settings show it.
- With the border crop the model never sees the marker (in view on {crop_in_view:.2f} of the films): accuracy {crop_marked:.2f} marked, {crop_free:.2f} marker-free.
"""


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def render(template: str, facts: Mapping[str, Any]) -> str:
    """``template`` filled from ``facts``, without the lines whose placeholders have no value."""
    kept = []
    for line in template.strip().splitlines():
        fields = [name for _, name, _, _ in Formatter().parse(line) if name]
        if all(_known(facts.get(name)) for name in fields):
            kept.append(line.format_map(facts))
    return "\n".join(kept)


def conclusions(template: str, facts: Mapping[str, Any]):
    """The filled template as IPython ``Markdown``, for ``display`` in a notebook."""
    from IPython.display import Markdown

    return Markdown(render(template, facts))


def _by_variant(records: Sequence[RunRecord]) -> dict[str, RunRecord]:
    """The last record of each variant (aliases folded: frozen = v2reg, finetune = v3)."""
    found: dict[str, RunRecord] = {}
    for record in records:
        found[canonical_variant(record.model.variant)] = record
    return found


def progression_facts(records: Sequence[RunRecord]) -> dict[str, Any]:
    """The numbers of :data:`PROGRESSION`, from the V0 … V3 records given."""
    runs = _by_variant(records)
    facts: dict[str, Any] = {v: r.name for v, r in runs.items()}
    classes = next((r.dataset.classes for r in runs.values()), [])
    facts["chance"] = 1 / len(classes) if classes else math.nan
    test = {v: record_float(r, "test", "accuracy") for v, r in runs.items()}
    facts["v0_test"] = test.get("v0")
    order = [v for v in ("v0", "v1", "v2", "v2reg", "v3") if v in runs]
    steps = [f"{facts[after]} {test[after]:.3f} ({test[after] - test[before]:+.3f})"
             for before, after in zip(order, order[1:])]
    facts["steps"] = " → ".join(steps) or None
    if "v2" in runs and "v2reg" in runs:
        gap = {v: record_float(runs[v], "final", "accuracy") - record_float(runs[v], "final", "val_accuracy")
               for v in ("v2", "v2reg")}
        facts["v2_gap"], facts["v2reg_gap"] = gap["v2"], gap["v2reg"]
        facts["dropout_gap"] = "smaller" if abs(gap["v2reg"]) < abs(gap["v2"]) else "not smaller"
    tested = {facts[v]: a for v, a in test.items() if not math.isnan(a)}
    if tested:
        facts["best"] = max(tested, key=tested.get)
        facts["best_test"] = tested[facts["best"]]
    return facts


def backbone_facts(records: Sequence[RunRecord], names: Sequence[str]) -> dict[str, Any]:
    """The numbers of :data:`BACKBONES`: the best run, its rivals, fine-tuning, wall time."""
    from cxrlib.course.progression import accuracy_ci

    acc = {n: record_float(r, "test", "accuracy") for n, r in zip(names, records)}
    acc = {n: a for n, a in acc.items() if not math.isnan(a)}
    facts: dict[str, Any] = {}
    if acc:
        ci = accuracy_ci(records, names)
        best = max(acc, key=acc.get)
        facts.update(best=best, best_test=acc[best])
        if best in ci:
            facts["best_low"], facts["best_high"] = ci[best]
            close = [n for n in acc if n != best and n in ci and ci[n][1] >= ci[best][0]]
            facts["overlapping" if close else "when_clear_lead"] = ", ".join(close)
    scores: dict[str, dict[str, float]] = {}
    for name, record in zip(names, records):
        if name in acc:
            scores.setdefault(record.model.backbone, {})[canonical_variant(record.model.variant)] = acc[name]
    changes = [f"{b} {s['v2reg']:.3f} → {s['v3']:.3f} ({s['v3'] - s['v2reg']:+.3f})"
               for b, s in scores.items() if "v2reg" in s and "v3" in s]
    facts["finetune_changes"] = "; ".join(changes) or None
    wall = {n: record_float(r, "training", "wall_time_s") for n, r in zip(names, records)}
    wall = {n: w for n, w in wall.items() if not math.isnan(w)}
    if len(wall) > 1:
        fast, slow = min(wall, key=wall.get), max(wall, key=wall.get)
        facts.update(fastest=fast, fastest_s=wall[fast], slowest=slow, slowest_s=wall[slow])
    return facts


def heatmap_facts(method_table: pd.DataFrame | None = None, per_class: pd.DataFrame | None = None,
                  shortcut: dict | None = None, min_ratio: float = 1.2,
                  subject: str = "the model") -> dict[str, Any]:
    """The numbers of :data:`HEATMAPS`.

    ``method_table`` is a lesion or region table and ``per_class`` a class-regions table of
    the model named ``subject``; ``shortcut`` the shortcut experiment's result. A method
    "beats" the random map at ``min_ratio`` times its lesion energy.
    """
    facts: dict[str, Any] = {"subject": subject, "min_ratio": min_ratio}
    if method_table is not None and len(method_table):
        facts.update(_method_facts(method_table.drop(index="random", errors="ignore"), min_ratio))
    if per_class is not None and len(per_class):
        rows = per_class.drop(index="random map", errors="ignore").dropna(subset=["border_share"])
        if len(rows):
            top = rows["border_share"].idxmax()
            facts.update(class_top=top, class_top_share=rows.loc[top, "border_share"],
                         class_random=per_class["border_share"].get("random map"))
    if shortcut and "shortcut" in shortcut:
        facts.update(_shortcut_facts(shortcut))
    return facts


def _method_facts(table: pd.DataFrame, min_ratio: float) -> dict[str, Any]:
    n = int(table["n"].max())
    facts: dict[str, Any] = {"few_images": n if n < 50 else None}
    if "energy_inside" in table:
        top = table.sort_values("energy_inside", ascending=False).iloc[0]
        ratio = table["energy_inside"] / table["random_energy_inside"]
        pointing = table.sort_values("pointing_rate", ascending=False).iloc[0]
        facts.update(n=n, lesion_best=top.name, lesion_energy=top["energy_inside"],
                     lesion_random=top["random_energy_inside"], lesion_area=top["mask_share"],
                     beat=", ".join(m for m in table.index if ratio[m] >= min_ratio) or "no method",
                     fail=", ".join(m for m in table.index if not ratio[m] >= min_ratio) or "none",
                     pointing_best=pointing.name, pointing_rate=pointing["pointing_rate"],
                     pointing_random=pointing["random_pointing_rate"])
    else:
        border = table.sort_values("border_share", ascending=False).iloc[0]
        facts.update(n_regions=n, border_best=border.name, border_share=border["border_share"],
                     border_random=border["random_border_share"])
    if "seconds" in table:
        slow, fast = table["seconds"].idxmax(), table["seconds"].idxmin()
        facts.update(slowest=slow, slowest_s=table.loc[slow, "seconds"], fastest=fast,
                     fastest_s=table.loc[fast, "seconds"])
    return facts


def _shortcut_facts(result: dict) -> dict[str, Any]:
    s, settings = result["shortcut"], result["settings"]
    drop = s["accuracy_marked"] - s["accuracy_marker_free"]
    facts: dict[str, Any] = {
        "marked": s["accuracy_marked"], "marker_free": s["accuracy_marker_free"],
        "shortcut_chance": 1 / len(settings["classes"]), "marker_share": s.get("marker_share_marked"),
        "marker_area": s.get("marker_area_share"), "shortcut_per_class": settings["per_class"],
        "shortcut_epochs": settings["epochs"]}
    facts["drop" if drop >= 0.1 else "when_no_shortcut"] = drop if drop >= 0.1 else ""
    if "cropped" in result:
        c = result["cropped"]
        facts.update(crop_in_view=c.get("marker_pixels_in_view"), crop_marked=c["accuracy_marked"],
                     crop_free=c["accuracy_marker_free"])
    return facts
