"""``python -m cxrlib`` (also installed as ``cxr``): a thin layer over the library.

Each sub-command parses its flags and calls one library function with the same defaults
the notebooks use. Errors the user can fix (:class:`cxrlib.errors.UserError`: a missing
dataset, unavailable weights, a bad flag or file; a full disk) print one clear line and exit
with status 2, never a stack trace. Anything else is an internal error: one line naming the
log file that holds its traceback, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from cxrlib.apps.failures import check_out, log_traceback, user_error_message
from cxrlib.apps.train_flags import (
    TRAIN_FLAGS,
    UNSET,
    check_split_file,
    dest,
    non_negative_float,
    positive_int,
)
from cxrlib.errors import InputError
from cxrlib.text import one_line

log = logging.getLogger("cxrlib")

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    """Register a sub-command handler."""
    def register(function: Callable[[argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = function
        return function
    return register


@command("synth")
def _synth(args: argparse.Namespace) -> int:
    from cxrlib.data.synthetic import generate_synthetic

    out = generate_synthetic(args.out, per_class=args.per_class, size=args.size, seed=args.seed,
                             classes=args.classes or None, shortcut_class=args.shortcut_class,
                             marker_prob=args.marker_prob, progress=not args.quiet)
    print(f"Synthetic dataset written to {out}")
    return 0


@command("data check")
def _data_check(args: argparse.Namespace) -> int:
    from cxrlib.data.check_report import format_check_report
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.quality import check_manifest

    manifest = load_manifest(args.dir, layout=args.layout)
    report = check_manifest(manifest, progress=not args.json)
    report["layout"] = manifest.attrs.get("layout", "")
    report["root"] = manifest.attrs.get("root", "")
    print(json.dumps(report, indent=2) if args.json else format_check_report(report))
    return 0


@command("data download")
def _data_download(args: argparse.Namespace) -> int:
    from cxrlib.data.datasets import download

    print(f"Downloaded to {download(args.name, args.dest)}")
    return 0


@command("train")
def _train(args: argparse.Namespace) -> int:
    from cxrlib.data.splits import prepare_split
    from cxrlib.runs.train import train

    spec = spec_from_args(args)
    if args.split_file:
        check_split_file(args)
    strategy, cluster = _train_strategy(args.strategy)
    split = spec.split
    manifest, classes = prepare_split(args.data, split, layout=args.layout, classes=args.classes,
                                      seed=spec.seed, split_file=args.split_file)
    record = train(manifest, classes, spec, args.out, reuse=not args.force,
                   mixed_precision=args.mixed_precision, xla=args.xla, strategy=strategy,
                   backup_every_s=args.backup_every,
                   dataset_info={"samples_per_class": split.samples_per_class,
                                 **({"preset": args.preset, "run": args.run} if args.preset else {})})
    if cluster is not None and not cluster.is_chief:
        print(f"{cluster.name} of {cluster.workers} workers: done; the chief writes the run to "
              f"{Path(args.out) / 'record.json'}")
        return 0
    print(f"{record.name}: {record.training.epochs_run} epochs, "
          f"val accuracy {record.final.val_accuracy}, "
          f"test accuracy {record.test.accuracy if record.test else None} "
          f"→ {Path(args.out) / 'record.json'}")
    return 0


def _train_strategy(name: str | None):
    """(strategy for ``train``, the TF_CONFIG cluster or None), before anything else runs.

    A set ``TF_CONFIG`` is validated whatever the strategy (a malformed one is one line);
    ``multiworker`` needs one, waits until every other worker answers (``CXR_WORKER_TIMEOUT``
    seconds) and creates the strategy now, as TensorFlow requires, before any of its ops."""
    from cxrlib.runs.distributed import multiworker_strategy, read_tf_config

    cluster = read_tf_config()
    if name != "multiworker":
        if cluster is not None and cluster.workers > 1:
            log.warning("TF_CONFIG names %d workers, but without --strategy multiworker this "
                        "process trains alone.", cluster.workers)
        return name, None
    return multiworker_strategy(cluster), cluster


def spec_from_args(args: argparse.Namespace) -> "RunSpec":  # noqa: F821
    """The run spec of ``cxr train``: the preset run's (``--preset``/``--run``) or the
    variant's library default (:func:`cxrlib.spec.variant_spec`), with every flag given
    mapped onto it (:data:`cxrlib.apps.train_flags.TRAIN_FLAGS`)."""
    from cxrlib.spec import updated, variant_spec

    if args.preset:
        from cxrlib.course.presets import get_preset, run_spec

        if not args.run:
            raise InputError("--preset needs --run KEY; `cxr presets` lists each preset's runs.")
        preset = get_preset(args.preset)
        try:
            spec = run_spec(preset, args.run, {k: "" for k in preset.keys()})
        except KeyError as error:
            raise InputError(str(error).strip('"')) from None
        spec = spec.model_copy(update={"init_from": None})  # a path: give it with --init-from
        if args.backbone or args.variant:
            spec = updated(spec, {k: v for k, v in (("backbone", args.backbone),
                                                    ("variant", args.variant)) if v})
    else:
        if not (args.backbone and args.variant):
            raise InputError("give --backbone and --variant, or --preset NAME --run KEY.")
        spec = variant_spec(args.backbone, args.variant)
    given = {field: getattr(args, dest(flag)) for flag, (field, _) in TRAIN_FLAGS.items()
             if getattr(args, dest(flag)) is not UNSET}
    return updated(spec, given) if given else spec


@command("presets")
def _presets(args: argparse.Namespace) -> int:
    from cxrlib.course.presets import PRESETS, as_json, get_preset
    from cxrlib.course.tables import preset_markdown, spec_lines

    chosen = [get_preset(args.name)] if args.name else list(PRESETS.values())
    if args.json:
        print(json.dumps({"presets": [as_json(p) for p in chosen]}, indent=2))
    elif args.markdown:
        print("\n\n".join(preset_markdown(p) for p in chosen))
    else:
        print("\n\n".join(spec_lines(p) for p in chosen))
    return 0


@command("pretrain")
def _pretrain(args: argparse.Namespace) -> int:
    import os

    from cxrlib.backbones import fit_size
    from cxrlib.course.setup import COURSE_BACKBONES
    from cxrlib.runs.pretrain import check_settings, ensure_pretrained
    from cxrlib.runs.pretrain_cache import PRETRAIN_BATCH, describe, is_standard

    if args.cache:
        os.environ["CXR_PRETRAINED_DIR"] = args.cache   # so that later look-ups find them too
    names = list(COURSE_BACKBONES) if args.backbone == "course" else [args.backbone]
    sizes = {name: fit_size(name, args.image_size) for name in names}
    for name in names:   # every backbone's settings refused before any of them pretrains
        check_settings(name, sizes[name], args.images, args.epochs, PRETRAIN_BATCH, args.seed)
    for name in names:
        path = ensure_pretrained(name, sizes[name], args.seed, progress=not args.quiet,
                                 n_images=args.images, epochs=args.epochs, force=args.force)
        info = describe(path)
        print(f"{name} at {sizes[name]} px: {path} ({info['images']} films, {info['epochs']} epochs, "
              f"{info.get('wall_time_s')} s)")
        if not is_standard(args.images, args.epochs, PRETRAIN_BATCH):
            print(f"  not the standard budget, so --weights synthetic does not load it: give "
                  f"--weights {path}")
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from cxrlib.runs.evaluate import evaluate_saved_model

    metrics = evaluate_saved_model(args.model, args.data, split=args.split, out_dir=args.out,
                                   layout=args.layout)
    auc = metrics["auc_macro"]
    auc_text = f"{auc:.3f}" if auc is not None else f"n/a ({metrics.get('auc_macro_note', '')})"
    print(f"accuracy {metrics['accuracy']:.3f}, macro AUC {auc_text} on {metrics['n']} "
          f"images → {Path(args.out) / 'metrics.json'}")
    return 0


@command("report")
def _report(args: argparse.Namespace) -> int:
    from cxrlib.files import write_text_atomic
    from cxrlib.runs.records import find_records
    from cxrlib.runs.report import comparison_table, markdown_table, write_report

    out = Path(args.out or args.runs_dir)
    written = write_report(args.runs_dir, out)
    listing = out / "files.txt"   # the list of what was written goes to a file, not the screen
    write_text_atomic(listing, "".join(f"{path}\n" for path in written.values()))
    records = find_records(args.runs_dir)
    if args.summary:
        from cxrlib.course.summary import demo_summary

        print(demo_summary(records, report_dir=out, notebooks_dir=args.notebooks, figures_dir=args.figures,
                           started=args.started, files_written=len(written)))
    else:
        print(markdown_table(comparison_table(records)))
        print(f"{len(written)} files written to {out} (listed in {listing}).")
    return 0


@command("notebooks")
def _notebooks(args: argparse.Namespace) -> int:
    from cxrlib.course.runner import NotebookFailed, run_series

    try:
        import papermill  # noqa: F401
    except ImportError:
        print("error: the notebooks command needs the course's packages: pip install 'cxrlib[course]' "
              "(make install does it)", file=sys.stderr)
        return 2
    parameters = {name: _parse_value(value) for name, value in args.parameter or []}
    try:
        run_series(args.out, only=args.only, smoke=args.smoke, parameters=parameters,
                   preset=args.preset)
    except NotebookFailed as failure:   # the notebook's own error: not the user's flags, not a bug here
        print(f"error: {one_line(failure)}", file=sys.stderr)
        return 1
    return 0


def _parse_value(text: str):
    """A papermill parameter from the command line: int, float, True/False, None/none, or string."""
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@command("diagnose")
def _diagnose(args: argparse.Namespace) -> int:
    from cxrlib.apps.diagnose import SUMMARY_FILE, diagnose_folder

    summary = diagnose_folder(args.images_dir, args.model, args.out, stage2_path=args.stage2,
                              method=args.method, progress=not args.quiet)
    bad = int((summary["error"] != "").sum())
    print(f"{len(summary) - bad} images diagnosed, {bad} unreadable → {Path(args.out) / SUMMARY_FILE}")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    from cxrlib.data.render import SYNTH_CLASSES

    p = sub.add_parser("synth", help="write the synthetic default dataset (COVID-19 Radiography v4 layout)")
    p.add_argument("out", help="output directory")
    p.add_argument("--per-class", type=positive_int, default=300, help="images per class (default 300)")
    p.add_argument("--size", type=int, default=256, help="nominal image size in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", choices=SYNTH_CLASSES, help="classes to draw (default all four)")
    p.add_argument("--shortcut-class", help="burn a marker into this class's images (shortcut lesson)")
    p.add_argument("--marker-prob", type=float, default=0.3, help="chance of a random border marker")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_data(sub: argparse._SubParsersAction) -> None:
    from cxrlib.data.datasets import KAGGLE_SOURCES, LAYOUTS

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="counts, sizes, modes, unreadable files and duplicates")
    check.add_argument("dir")
    check.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    get = data.add_parser("download", help="download a dataset with the Kaggle API")
    get.add_argument("name", choices=sorted(KAGGLE_SOURCES))
    get.add_argument("dest")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from cxrlib.backbones import BACKBONES
    from cxrlib.data.datasets import LAYOUTS
    from cxrlib.variants import VARIANT_NAMES

    p = sub.add_parser("train", help="train one run spec (a backbone x variant, or a course preset's run); "
                                     "writes RUN_DIR/record.json and model.keras")
    p.add_argument("--data", required=True, help="dataset directory (any supported layout)")
    p.add_argument("--backbone", choices=sorted(BACKBONES) + ["scratch"])
    p.add_argument("--variant", choices=VARIANT_NAMES)
    p.add_argument("--preset", help="start from a course preset's run (see `cxr presets`)")
    p.add_argument("--run", help="the preset's run key, e.g. v3")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    p.add_argument("--classes", nargs="+", help="classes to keep (default: all in the data)")
    p.add_argument("--split-file", help="reuse a saved split CSV instead of splitting")
    spec = p.add_argument_group("run spec", "each flag not given keeps the spec's value "
                                            "(`cxr presets` prints a preset's)")
    for flag, (_, options) in TRAIN_FLAGS.items():
        spec.add_argument(flag, default=UNSET, **options)
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPUs)")
    p.add_argument("--xla", action="store_true", help="compile with XLA")
    p.add_argument("--backup-every", type=non_negative_float, default=None, metavar="SECONDS",
                   help="seconds of training between two saves of the run's state, which an "
                        "interrupted run resumes from (default 60; 0: after every epoch)")
    p.add_argument("--strategy", choices=("mirrored", "multiworker"),
                   help="mirrored: every GPU of this machine; multiworker: several machines, one "
                        "process each, with TF_CONFIG (docs/multiworker.md); --batch-size is global")
    p.add_argument("--force", action="store_true",
                   help="retrain even if a finished identical run exists; discard an interrupted run")


def _add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="every course preset and each run's full spec")
    p.add_argument("name", nargs="?", help="one preset (default: all)")
    p.add_argument("--json", action="store_true",
                   help='{"presets": [{"name", "runs": [{"name", "spec", "reported"}]}]}')
    p.add_argument("--markdown", action="store_true", help="the README's course tables")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from cxrlib.backbones import BACKBONES
    from cxrlib.runs.pretrain_cache import PRETRAIN_EPOCHS, PRETRAIN_IMAGES

    p = sub.add_parser("pretrain", help="pretrain a backbone on the synthetic source task (weights 'synthetic')")
    p.add_argument("--backbone", required=True, choices=sorted(BACKBONES) + ["course"],
                   help="a registry backbone, or 'course' for the five of the course")
    p.add_argument("--image-size", type=int, default=64,
                   help="input size (default 64; raised to the backbone's minimum)")
    p.add_argument("--cache", "--out", dest="cache",
                   help="cache folder (default: $CXR_PRETRAINED_DIR or ~/.cache/cxrlib/pretrained)")
    p.add_argument("--images", type=int, default=PRETRAIN_IMAGES,
                   help=f"source-task films (default {PRETRAIN_IMAGES}; other than the default "
                        "budget, the weights are cached under another name, which --weights "
                        "synthetic does not load)")
    p.add_argument("--epochs", type=int, default=PRETRAIN_EPOCHS,
                   help=f"default {PRETRAIN_EPOCHS} (the same rule as --images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="pretrain again even when cached (a damaged entry is rebuilt anyway)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from cxrlib.data.datasets import LAYOUTS

    p = sub.add_parser("evaluate", help="score a saved model; writes OUT_DIR/metrics.json")
    p.add_argument("--model", required=True, help="RUN_DIR/model.keras (its record.json sits beside it)")
    p.add_argument("--data", help="--split all: the folder to score; --split test: optional, "
                                  "must be the run's own dataset folder")
    p.add_argument("--split", default="test", choices=("test", "all"),
                   help="test: the run's own test split (from RUN_DIR/split.csv); "
                        "all: every image of --data")
    p.add_argument("--out", required=True)
    p.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)


def _add_notebooks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notebooks", help="execute the notebook series headlessly with papermill")
    p.add_argument("--out", default="outputs/notebooks", help="where executed copies go")
    p.add_argument("--only", nargs="+", help="notebook numbers to run, e.g. 03 05")
    p.add_argument("--smoke", action="store_true", help="CXR_SMOKE=1: about a minute each on a CPU")
    p.add_argument("--preset", help="a course preset (cxrlib/course/presets.py): runs its notebooks with it")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="papermill parameter, e.g. -p COVID_DIR data/covid19-radiography")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="comparison table and plots from the run records in RUNS_DIR")
    p.add_argument("runs_dir")
    p.add_argument("--out", help="where to write (default: RUNS_DIR)")
    p.add_argument("--summary", action="store_true",
                   help="print what the demo showed (the lesson's table and verdicts) instead of the table")
    p.add_argument("--notebooks", help="with --summary: the executed notebooks' folder")
    p.add_argument("--figures", help="with --summary: the notebooks' figures folder")
    p.add_argument("--started", type=float, help="with --summary: when the demo started (Unix time)")


def _add_diagnose(sub: argparse._SubParsersAction) -> None:
    from cxrlib.apps.diagnose import DIAGNOSE_METHODS

    p = sub.add_parser("diagnose", help="classify every image in a folder; heat-map PNGs and OUT_DIR/summary.csv")
    p.add_argument("images_dir", help="folder of radiographs (searched recursively)")
    p.add_argument("--model", required=True, help="RUN_DIR/model.keras (its record.json sits beside it)")
    p.add_argument("--stage2", help="second model for the images the first calls pneumonia (bacterial/viral)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="gradcam++", choices=DIAGNOSE_METHODS, help="heat-map method")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


PARSER_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth, _add_data, _add_train, _add_presets, _add_pretrain, _add_evaluate, _add_report, _add_diagnose, _add_notebooks]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} -h')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = OneLineParser(prog="cxr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in PARSER_BUILDERS:
        add(sub)
    return parser


def _handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    name = args.command
    if getattr(args, "data_command", None):
        name = f"{name} {args.data_command}"
    return COMMANDS[name]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 done, 2 a user error, 1 an internal error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:   # TensorFlow's Python INFO lines (a multi-worker run logs every collective)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
        check_out(args)
        return _handler(args)(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - sorted below: the user's to fix, or a bug
        message = user_error_message(error, args)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return 2
        where = log_traceback(argv)
        print(f"error: internal error ({type(error).__name__}: {one_line(error, 200)}); "
              + (f"full traceback in {where}" if where else "no log could be written")
              + ". Please report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
