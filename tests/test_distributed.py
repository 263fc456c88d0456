"""Multi-worker training: TF_CONFIG is checked before anything starts, a group of two worker
processes on this machine trains one run that only the chief writes, and an interrupted group
resumes where it stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from cxrlib.apps.cli import main
from cxrlib.data.datasets import load_manifest
from cxrlib.data.splits import split_manifest
from cxrlib.data.synthetic import generate_synthetic
from cxrlib.errors import InputError
from cxrlib.runs import distributed

CLASSES = ["COVID", "Normal"]
REPO = Path(__file__).resolve().parents[1]


def tf_config(ports, index: int, chief: bool = False) -> str:
    workers = [f"127.0.0.1:{p}" for p in ports]
    cluster = {"chief": workers[:1], "worker": workers[1:]} if chief else {"worker": workers}
    task = ({"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}) \
        if chief else {"type": "worker", "index": index}
    return json.dumps({"cluster": cluster, "task": task})


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# --------------------------------------------------------------------------- TF_CONFIG

def test_a_valid_tf_config_names_the_chief_and_the_peers() -> None:
    cluster = distributed.read_tf_config(tf_config([1001, 1002, 1003], 2))
    assert cluster.workers == 3 and not cluster.is_chief and cluster.name == "worker 2"
    assert cluster.address == "127.0.0.1:1003"
    assert [a for _, a in cluster.peers] == ["127.0.0.1:1001", "127.0.0.1:1002"]
    assert distributed.read_tf_config(tf_config([1001, 1002], 0)).is_chief        # worker 0
    with_chief = distributed.read_tf_config(tf_config([1001, 1002], 0, chief=True))
    assert with_chief.is_chief and with_chief.name == "chief 0"
    assert not distributed.read_tf_config(tf_config([1001, 1002], 1, chief=True)).is_chief  # worker 0
    assert distributed.read_tf_config("") is None and distributed.read_tf_config("  ") is None


@pytest.mark.parametrize("text, says", [
    ('{"cluster": ', "not valid JSON"),
    ('["worker"]', '"cluster" object'),
    ('{"cluster": {"worker": ["a:1"]}}', '"task" object'),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "ps"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "not a list"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "two tasks"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "does not list"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}', "type must be"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "index a number"),
])
def test_a_malformed_tf_config_is_one_clear_line(text, says) -> None:
    with pytest.raises(InputError, match=says) as caught:
        distributed.read_tf_config(text)
    assert "\n" not in str(caught.value) and "docs/multiworker.md" in str(caught.value)


def test_the_worker_timeout_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(distributed.TIMEOUT_VARIABLE, raising=False)
    assert distributed.worker_timeout() == 60
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "2.5")
    assert distributed.worker_timeout() == 2.5
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, bad)
        with pytest.raises(InputError, match=distributed.TIMEOUT_VARIABLE):
            distributed.worker_timeout()


def test_workers_started_together_find_each_other_and_a_missing_one_is_named() -> None:
    ports = free_ports(3)
    group = [distributed.read_tf_config(tf_config(ports[:2], i)) for i in range(2)]
    errors: list = []

    def wait(cluster):
        try:
            distributed.wait_for_peers(cluster, timeout=20)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=wait, args=(c,)) for c in group]
    for thread in threads:   # each waits for the other: neither port is TensorFlow's yet
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and not any(t.is_alive() for t in threads)
    alone = distributed.read_tf_config(tf_config(ports[1:], 0))
    with pytest.raises(InputError, match=f"127.0.0.1:{ports[2]} \\(worker 1\\).*0.5 s"):
        distributed.wait_for_peers(alone, timeout=0.5)


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1   # one line
    return err


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny synthetic set (2 classes x 12 films, 48 px) and its split file."""
    root = tmp_path_factory.mktemp("mw_data")
    data = generate_synthetic(root / "data", per_class=12, size=48, seed=2, classes=CLASSES,
                              vary_size=False, progress=False)
    split = split_manifest(load_manifest(data), val=0.25, test=0.25, seed=0)
    split_file = root / "split.csv"
    split.to_csv(split_file, index=False)
    return data, split_file


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_bad_tf_config_stops_the_cli_before_anything_is_written(tiny_data, tmp_path, capsys,
                                                                monkeypatch) -> None:
    data, split_file = tiny_data
    before = _listing(data)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--split-file", str(split_file), "--backbone", "scratch",
            "--variant", "scratch", "--strategy", "multiworker", "--out", str(out)]
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": ')
    assert "TF_CONFIG is not valid JSON" in _cli_error(capsys, argv)
    monkeypatch.setenv("TF_CONFIG", tf_config([2001, 2002], 5))
    assert "does not list" in _cli_error(capsys, argv)
    monkeypatch.delenv("TF_CONFIG")
    assert "needs TF_CONFIG" in _cli_error(capsys, argv)
    ports = free_ports(2)
    monkeypatch.setenv("TF_CONFIG", tf_config(ports, 1))
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "0.5")
    assert f"could not reach 127.0.0.1:{ports[0]} (worker 0) within 0.5 s" in _cli_error(capsys, argv)
    monkeypatch.setenv("TF_CONFIG", "not json")   # refused whatever the strategy
    assert "TF_CONFIG is not valid JSON" in _cli_error(capsys, argv[:-4] + ["--out", str(out)])
    assert not out.exists() and _listing(data) == before


# --------------------------------------------------------------------------- two workers

def _start_group(command: list[str], tmp_path: Path, ports: list[int], tag: str,
                 extra_env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Run ``command`` as worker 0 and worker 1 at once; each gets its own TMPDIR."""
    processes = []
    for index in range(2):
        temp = tmp_path / f"tmp{index}"
        temp.mkdir(exist_ok=True)
        env = {**os.environ, "TF_CONFIG": tf_config(ports, index), "TMPDIR": str(temp),
               "CXR_WORKER_TIMEOUT": "120", "TF_CPP_MIN_LOG_LEVEL": "2", **(extra_env or {})}
        log = open(tmp_path / f"{tag}-worker{index}.log", "w")
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=REPO), log))
    done = []
    for process, log in processes:
        try:
            process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
        done.append(process.returncode)
    return [subprocess.CompletedProcess(command, rc, (tmp_path / f"{tag}-worker{i}.log").read_text())
            for i, rc in enumerate(done)]


def _check_published(out: Path, tmp_path: Path, epochs: int) -> dict:
    """One run, one record, naming two workers; nothing from the other worker anywhere."""
    from cxrlib.runs.records import find_records, read_record

    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.keras", "record.json",
                                                     "split.csv"]
    assert len(find_records(out.parent)) == 1
    record = read_record(out)
    runtime = record.runtime
    assert runtime.strategy == "multiworker" and runtime.workers == 2
    assert runtime.replicas == 2 and runtime.global_batch == 8 and runtime.per_worker_batch == 4
    assert record.training.epochs_run == epochs
    assert list((tmp_path / "tmp1").iterdir()) == []   # worker 1 removed its folder
    return record


@pytest.mark.slow
def test_two_workers_train_one_run_that_only_the_chief_writes(tiny_data, tmp_path) -> None:
    from cxrlib.data.splits import load_split
    from cxrlib.runs.evaluate import evaluate, load_run

    data, split_file = tiny_data
    before = _listing(data)
    out = tmp_path / "runs" / "scratch"
    command = [sys.executable, "-m", "cxrlib", "train", "--data", str(data), "--split-file",
               str(split_file), "--backbone", "scratch", "--variant", "scratch", "--image-size", "32",
               "--epochs", "2", "--batch-size", "8", "--strategy", "multiworker", "--out", str(out)]
    chief, other = _start_group(command, tmp_path, free_ports(2), "fit")
    assert chief.returncode == 0, chief.stdout[-3000:]
    assert other.returncode == 0, other.stdout[-3000:]
    assert "record.json" in chief.stdout.splitlines()[-1]
    assert "worker 1 of 2 workers: done" in other.stdout
    record = _check_published(out, tmp_path, epochs=2)
    assert record.test.n == len(load_split(split_file).query("split == 'test'"))
    assert _listing(data) == before
    run = load_run(out)
    scores = evaluate(run.model, load_split(split_file).query("split == 'test'"), run.classes,
                      run.prep, batch_size=8, bootstrap=10)
    assert scores["n"] == record.test.n and 0 <= scores["accuracy"] <= 1


WORKER = textwrap.dedent("""
    import os, sys
    import keras
    from cxrlib.runs.distributed import multiworker_strategy
    strategy = multiworker_strategy()   # first: before any TensorFlow op
    from cxrlib.data.splits import load_split
    from cxrlib.runs.train import train
    from cxrlib.spec import variant_spec

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == int(os.environ.get("STOP_AFTER_EPOCH", "-1")):
                raise RuntimeError("simulated preemption")

    spec = variant_spec("scratch", "scratch", image_size=32, epochs=2, batch_size=8)
    record = train(load_split(sys.argv[1]), ["COVID", "Normal"], spec, sys.argv[2], strategy=strategy,
                   callbacks=[Stop()], progress=False, bootstrap=20)
    print("RESUMED", record.training.resumed, "EPOCHS", record.training.epochs_run)
""")


@pytest.mark.slow
def test_an_interrupted_group_resumes_when_both_workers_start_again(tiny_data, tmp_path) -> None:
    from cxrlib.runs.run_folder import LOCK_FILE, PARTIAL

    _, split_file = tiny_data
    out = tmp_path / "runs" / "scratch"
    command = [sys.executable, "-c", WORKER, str(split_file), str(out)]
    stopped = _start_group(command, tmp_path, free_ports(2), "stopped", {"STOP_AFTER_EPOCH": "0"})
    assert [p.returncode for p in stopped] == [1, 1], stopped[0].stdout[-3000:]
    assert all("simulated preemption" in p.stdout for p in stopped)
    assert (out / PARTIAL / "backup").is_dir() and not (out / "record.json").exists()
    assert not (out / LOCK_FILE).exists()
    kept = list((tmp_path / "tmp1").iterdir())   # worker 1's own backup, kept for the resume
    assert len(kept) == 1 and (kept[0] / "backup").is_dir()
    resumed = _start_group(command, tmp_path, free_ports(2), "resumed")
    assert [p.returncode for p in resumed] == [0, 0], resumed[0].stdout[-3000:] + resumed[1].stdout[-3000:]
    assert all("RESUMED True EPOCHS 2" in p.stdout for p in resumed)
    record = _check_published(out, tmp_path, epochs=2)
    assert record.training.resumed is True
    assert len(record.training.history["val_loss"]) == 2
