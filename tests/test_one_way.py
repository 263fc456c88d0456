"""One way to do each thing: files reach a model through ``pipeline.model_inputs`` only, and
an unreadable film among good ones is dropped with its reason, never a crash."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_record
from PIL import Image

from cxrlib.data.pipeline import model_inputs
from cxrlib.data.prepare import Prep

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["COVID", "Normal"]
PREP = Prep(image_size=32, backbone="scratch")


def _sources() -> dict[str, str]:
    """Every module of cxrlib and every notebook's code, by name."""
    out = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
           for p in sorted((ROOT / "cxrlib").rglob("*.py"))}
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        out[str(notebook.relative_to(ROOT))] = "\n".join(
            "\n".join(line for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
            for cell in code)
    return out


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(called name, call) for every call of a plain or dotted name."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            out.append((name, node))
    return out


def one_way_problems(sources: dict[str, str]) -> list[str]:
    """Where files reach a model another way than ``model_inputs(paths, prep)``: a stacked
    list of prepared images (which holds None for an unreadable film), or the pixel readers
    called outside the pipeline."""
    problems = []
    for name, text in sources.items():
        for called, call in _calls(ast.parse(text)):
            where = f"{name}:{call.lineno}"
            first = call.args[0] if call.args else None
            if called in ("model_inputs", "input_array") and isinstance(first, ast.Call) \
                    and _calls(first) and _calls(first)[0][0] == "stack":
                problems.append(f"{where}: {called}(np.stack(...)) stacks prepared images")
            if called == "read_prepared":
                problems.append(f"{where}: read_prepared (a list with None for bad files)")
            if called in ("prepare_files", "prepare_readable") and name not in ("cxrlib/data/pipeline.py",
                                                                                "cxrlib/data/prepare.py"):
                problems.append(f"{where}: {called} outside the pipeline: use model_inputs")
            if called == "input_array" and name not in ("cxrlib/data/pipeline.py",
                                                        "cxrlib/runs/pretrain.py"):
                problems.append(f"{where}: input_array on images from files: use model_inputs")
    return problems


def test_files_reach_models_through_model_inputs_only() -> None:
    assert one_way_problems(_sources()) == []


def test_the_check_catches_the_old_patterns() -> None:
    old = {"a.py": "images, _ = read_prepared(paths, prep)\nx = model_inputs(np.stack(images), prep)\n",
           "b.py": "images, errors = prepare_files(paths, prep)\n"}
    problems = one_way_problems(old)
    assert len(problems) == 3 and any("np.stack" in p for p in problems)


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> pd.DataFrame:
    """Four small films of two classes, the second of them corrupt."""
    root = tmp_path_factory.mktemp("one_way")
    rows = []
    for i, label in enumerate(["COVID", "COVID", "Normal", "Normal"]):
        path = root / f"film{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40), np.uint8)).save(path)
        rows.append({"path": str(path), "label": label, "patient_id": f"p{i}", "source": "",
                     "subtype": "", "mask_path": "", "mask_kind": ""})
    Path(rows[1]["path"]).write_bytes(b"not an image at all")
    return pd.DataFrame(rows)


def test_model_inputs_drop_an_unreadable_film_with_its_reason(films) -> None:
    skipped: list = []
    inputs = model_inputs(films["path"].tolist(), PREP, skip_log=skipped)
    assert inputs.kept == [0, 2, 3] and list(inputs.dropped) == [1]
    assert inputs.dropped[1] and skipped == [{"path": films["path"][1], "error": inputs.dropped[1]}]
    assert inputs.x.shape == (3, 32, 32, 3) and inputs.x.dtype == np.float32
    assert inputs.images.shape == (3, 32, 32) and inputs.images.dtype == np.uint8
    np.testing.assert_allclose(inputs.x[..., 0], inputs.images / 255.0, atol=1e-6)


@pytest.fixture(scope="module")
def run():
    """An untrained 2-class scratch CNN, loaded as a run."""
    from cxrlib.models.build import build_model
    from cxrlib.runs.evaluate import Run

    return Run(model=build_model("scratch", "scratch", 2, 32, None, seed=1),
               record=make_record("tiny", classes=CLASSES), prep=PREP, classes=CLASSES, dir=Path("."))


def test_heat_map_lessons_leave_out_an_unreadable_film(films, run) -> None:
    from cxrlib.course import heatmaps as hl

    scores = hl.region_scores(run.model, films, CLASSES, PREP, batch_size=2)
    assert scores["path"].tolist() == films["path"][[0, 2, 3]].tolist()
    examples = hl.pick_examples(films, CLASSES, 4)
    assert sorted(examples["path"]) == sorted(films["path"])  # the corrupt film is among them


def test_pneumonia_occlusion_leaves_out_an_unreadable_film(films, run) -> None:
    from cxrlib.course.pneumonia import occlusion_figure

    figure = occlusion_figure(run, films, n=4, patch=16, stride=16)  # all four films
    assert len(figure.axes) == 3 * 2  # three readable films: the radiograph and the map each


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the cxrlib modules it imports anywhere, inside functions too."""
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                       if isinstance(node, ast.ImportFrom) and node.module else [])
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of an import graph: each set of modules that reach one another, sorted."""
    reach = {name: set() for name in graph}
    for start in graph:
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in reach[start]:
                reach[start].add(module)
                todo.extend(graph[module])
    cycles = {tuple(sorted({m for m in reach[n] if n in reach[m]} | {n})) for n in graph if n in reach[n]}
    return sorted(list(c) for c in cycles)


def test_no_import_cycles_in_cxrlib() -> None:
    """No module needs a function-local import to dodge a cycle (progression and reproduce had
    one, through setup and runner)."""
    assert import_cycles(import_graph(ROOT / "cxrlib")) == []
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
