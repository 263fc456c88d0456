"""The report of :func:`cxrlib.data.quality.check_manifest` as readable text for the terminal
(``cxr data check``, notebook 00): tables, counts, and at most :data:`MAX_LISTED` paths per section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_LISTED = 20


def format_check_report(report: dict) -> str:
    """The report as readable text for the terminal (tables, counts, ≤ 20 paths per section)."""
    sections = [
        _format_overview(report),
        _format_splits(report.get("splits", {})),
        _format_sizes(report),
        _format_unreadable(report.get("unreadable", [])),
        _format_exact(report.get("exact_duplicates", [])),
        _format_near(report),
        _format_crossing(
            "Cross-split duplicates (data leakage)", report.get("cross_split_duplicates", [])
        ),
        _format_crossing(
            "Cross-label duplicates (conflicting labels)", report.get("cross_label_duplicates", [])
        ),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """A left/right aligned text table (first column left, others right)."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append(indent + "  ".join(parts).rstrip())
    return lines


def _more(items: Sequence[Any]) -> tuple[Sequence[Any], str | None]:
    """The first MAX_LISTED items and a '... and N more' line when some are left out."""
    extra = len(items) - MAX_LISTED
    return items[:MAX_LISTED], (f"  ... and {extra} more" if extra > 0 else None)


def _listing(title: str, items: Sequence[Any], render: Any) -> str:
    """A titled section listing at most MAX_LISTED rendered items."""
    if not items:
        return f"{title}: none"
    shown, more = _more(items)
    lines = [f"{title}: {len(items)}"] + [render(item) for item in shown]
    return "\n".join(lines + ([more] if more else []))


def _format_overview(report: dict) -> str:
    """Image counts and the per-class table."""
    n, ok = report.get("n_images", 0), report.get("n_readable", 0)
    lines = [f"Images: {n} listed, {ok} readable, {n - ok} unreadable"]
    classes = report.get("classes", {})
    if classes:
        lines.append("Classes (readable images):")
        lines += _table(("label", "count"), sorted(classes.items()))
    return "\n".join(lines)


def _format_splits(splits: dict) -> str:
    """Split × label table (empty string when there are no splits)."""
    if not splits:
        return ""
    labels = sorted({lab for counts in splits.values() for lab in counts})
    rows = [
        [s or "(none)", *(splits[s].get(lab, 0) for lab in labels), sum(splits[s].values())]
        for s in splits
    ]
    return "\n".join(["Splits (readable images):"] + _table(["split", *labels, "total"], rows))


def _format_sizes(report: dict) -> str:
    """Size statistics, most common sizes and modes."""
    lines = ["Image sizes:"]
    for axis, stats in report.get("sizes", {}).items():
        if stats.get("min") is None:
            lines.append(f"  {axis}: n/a")
        else:
            lines.append(
                f"  {axis}: min {stats['min']}, max {stats['max']}, "
                f"mean {stats['mean']:.1f}, median {stats['median']:.1f}"
            )
    if report.get("size_counts"):
        lines.append("Most common sizes:")
        lines += _table(("size", "count"), list(report["size_counts"].items()))
    if report.get("modes"):
        lines.append("Modes: " + ", ".join(f"{m} {c}" for m, c in report["modes"].items()))
    return "\n".join(lines)


def _format_unreadable(items: list[dict]) -> str:
    """Unreadable files with their reasons."""
    return _listing("Unreadable files", items, lambda e: f"  {e['path']}: {e['error']}")


def _format_exact(groups: list[list[str]]) -> str:
    """Exact duplicate groups."""
    return _listing("Exact duplicate groups", groups, lambda g: "  " + "  ==  ".join(g))


def _format_near(report: dict) -> str:
    """Confirmed near duplicate pairs (distance, similarity) and the rejected-candidate count."""

    def render(pair: dict) -> str:
        r = pair.get("similarity")
        detail = "" if r is None else f", r = {r:.4f}"
        return f"  {pair['a']}  ~  {pair['b']}  (distance {pair['distance']}{detail})"

    threshold, similarity = report.get("near_threshold"), report.get("min_similarity")
    title = "Near duplicate pairs"
    if threshold is not None and similarity is not None:
        title += f" (dHash within {threshold} bits, thumbnail r >= {similarity:g})"
    text = _listing(title, report.get("near_duplicates", []), render)
    if "near_candidates_rejected" in report:
        text += (
            f"\n  hash candidates rejected (thumbnail r below the threshold): "
            f"{report['near_candidates_rejected']}"
        )
    return text


def _format_crossing(title: str, entries: list[dict]) -> str:
    """Duplicates crossing splits or labels, each member with its split and label."""

    def render(entry: dict) -> str:
        members = [
            f"{path} [{label}{'' if split is None else ', ' + split}]"
            for path, label, split in zip(entry["paths"], entry["labels"], entry["splits"])
        ]
        detail = ""
        if "distance" in entry:
            r = entry.get("similarity")
            detail = f"  (distance {entry['distance']}" + ("" if r is None else f", r = {r:.4f}")
            detail += ")"
        return f"  {entry['kind']}: " + "  /  ".join(members) + detail

    return _listing(title, entries, render)
