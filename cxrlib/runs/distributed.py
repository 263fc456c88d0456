"""Training on several machines: ``tf.distribute.MultiWorkerMirroredStrategy`` for ``train``.

TensorFlow's conventions, which :func:`cxrlib.runs.train.train` follows (docs/multiworker.md
shows how to start a group):

- every worker runs the same program on the same data: the same manifest, split, model
  build and fit; the gradients are summed over the workers at every step;
- ``TF_CONFIG`` (JSON, one per worker) names the cluster and this worker's task;
- the **chief** (the ``chief`` task, else worker 0) holds the run folder's lock, writes the
  folder and publishes the record; every other worker works in a temporary folder of its
  own (:func:`worker_dir`), which it removes once the run has finished (it is kept after a
  failure, for the resume);
- each worker backs up its own training state (``BackupAndRestore``: the chief in
  ``RUN/.partial/backup``, the others in their temporary folder); a worker that can see the
  chief's backup (a shared disk) restores that one, and the group checks that every worker
  resumes at the same epoch before the first step.

:func:`read_tf_config` validates ``TF_CONFIG`` and :func:`multiworker_strategy` waits (a
bounded time, ``CXR_WORKER_TIMEOUT`` seconds) until every other task's address answers
before it creates the strategy, so that a typo or a worker that never started is one line,
not a hang. The strategy must be created before any TensorFlow operation runs in the process
(TensorFlow's rule): ``cxr train`` creates it first thing.

Keras 3 does not run ``fit`` under this strategy as it comes (keras-team/keras#20585): it
reduces a nested batch, and the per-step scalar logs with ``axis=0``, through
``Strategy.reduce``, which takes neither. :func:`multiworker_strategy` returns a subclass
whose ``reduce`` takes both; :func:`keras_ready` gives a strategy object made elsewhere the
same ``reduce``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cxrlib.errors import InputError

log = logging.getLogger(__name__)

TIMEOUT_VARIABLE = "CXR_WORKER_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
TASK_TYPES = ("chief", "worker")   # MultiWorkerMirroredStrategy's; no ps, no evaluator


@dataclass(frozen=True)
class Cluster:
    """A validated ``TF_CONFIG``: the cluster's tasks and this worker's."""

    tasks: tuple[tuple[str, int, str], ...]   # (type, index, "host:port"), the chief first
    task_type: str
    task_index: int

    @property
    def address(self) -> str:
        return self._find(self.task_type, self.task_index)

    @property
    def peers(self) -> list[tuple[str, str]]:
        """(name, address) of every other task."""
        return [(f"{t} {i}", a) for t, i, a in self.tasks
                if (t, i) != (self.task_type, self.task_index)]

    @property
    def workers(self) -> int:
        return len(self.tasks)

    @property
    def is_chief(self) -> bool:
        return is_chief_task(self.task_type, self.task_index, {t for t, _, _ in self.tasks})

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"

    def _find(self, task_type: str, index: int) -> str:
        return next(a for t, i, a in self.tasks if (t, i) == (task_type, index))


def is_chief_task(task_type: str | None, index: int | None, job_types: set[str]) -> bool:
    """The chief: the ``chief`` task, or worker 0 when the cluster has none."""
    if task_type == "chief":
        return True
    return task_type in ("worker", None) and not index and "chief" not in job_types


def _bad(what: str) -> InputError:
    return InputError(f"TF_CONFIG {what}. It must be JSON such as "
                      '{"cluster": {"worker": ["host1:23456", "host2:23456"]}, '
                      '"task": {"type": "worker", "index": 0}}; see docs/multiworker.md.')


def _check_address(address, where: str) -> str:
    if not isinstance(address, str) or address.count(":") < 1:
        raise _bad(f"has {address!r} in {where}, not a host:port address")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"has {address!r} in {where}, not a host:port address (a port from 1 to 65535)")
    return address


def read_tf_config(text: str | None = None) -> Cluster | None:
    """The cluster that ``TF_CONFIG`` (``text``, else the environment variable) describes;
    None when it is unset or empty. Raises :class:`InputError`, one line, when it is not
    valid JSON, names job types other than ``chief`` and ``worker``, gives an address that is
    not ``host:port`` or twice, or a task that is not in the cluster."""
    text = os.environ.get("TF_CONFIG", "") if text is None else text
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise _bad(f"is not valid JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
            or not isinstance(config.get("task"), dict):
        raise _bad("needs a \"cluster\" object and a \"task\" object")
    cluster, task = config["cluster"], config["task"]
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        raise _bad(f"names the job types {unknown}; cxr train runs only 'chief' and 'worker' tasks "
                   "(MultiWorkerMirroredStrategy has no parameter servers or evaluator)")
    tasks = []
    for job in TASK_TYPES:
        addresses = cluster.get(job, [])
        if not isinstance(addresses, list) or (job in cluster and not addresses):
            raise _bad(f"has cluster.{job} = {addresses!r}, not a list of host:port addresses")
        tasks += [(job, i, _check_address(a, f"cluster.{job}")) for i, a in enumerate(addresses)]
    if not tasks:
        raise _bad("has no task in its cluster")
    if len([t for t in tasks if t[0] == "chief"]) > 1:
        raise _bad("has more than one chief")
    seen = [a for _, _, a in tasks]
    twice = sorted({a for a in seen if seen.count(a) > 1})
    if twice:
        raise _bad(f"gives the address {twice[0]} to two tasks")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in TASK_TYPES or not isinstance(index, int) or isinstance(index, bool):
        raise _bad(f"has task {task!r}; its type must be 'chief' or 'worker' and its index a number")
    if (task_type, index) not in {(t, i) for t, i, _ in tasks}:
        raise _bad(f"has task {task_type} {index}, which its cluster does not list "
                   f"({len(cluster.get(task_type, []))} {task_type} task(s), numbered from 0)")
    return Cluster(tuple(tasks), task_type, index)


def worker_timeout() -> float:
    """``CXR_WORKER_TIMEOUT`` (seconds, default 60): how long a worker waits for the others."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InputError(f"{TIMEOUT_VARIABLE} must be a number of seconds above 0, not {text!r}.")
    return value


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Answering:
    """A plain listener on this worker's port while it waits for the others: every worker
    waits before it starts TensorFlow's server, so without it two workers started together
    would each wait for the other's port to open, and neither would."""

    def __init__(self, address: str, name: str):
        _, port = _split(address)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(("", port))
        except OSError as error:
            self.socket.close()
            raise InputError(f"This worker ({name}, {address} in TF_CONFIG) cannot listen on port "
                             f"{port}: {error.strerror or error}; another process uses it, so "
                             "give this task another port in every worker's TF_CONFIG.") from None
        self.socket.listen(16)
        self.socket.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            connection.close()   # the peer only wanted to know that someone answers

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.socket.close()


def wait_for_peers(cluster: Cluster, timeout: float | None = None) -> None:
    """Return once every other task's address accepts a connection; raise :class:`InputError`
    naming the ones that did not within ``timeout`` seconds (default :func:`worker_timeout`).

    Meanwhile this worker's own port answers (a plain listener, closed on return, before
    TensorFlow's server takes the port), so workers started in any order find each other.
    """
    timeout = worker_timeout() if timeout is None else timeout
    waiting = dict(cluster.peers)   # name → address
    if not waiting:
        return
    listener = _Answering(cluster.address, cluster.name)
    deadline = time.monotonic() + timeout
    try:
        while waiting:
            for name, address in list(waiting.items()):
                try:
                    with socket.create_connection(_split(address), timeout=1.0):
                        pass
                    del waiting[name]
                except OSError:
                    continue
            if waiting and time.monotonic() > deadline:
                missing = ", ".join(f"{a} ({n})" for n, a in waiting.items())
                raise InputError(
                    f"This worker ({cluster.name}, {cluster.address}) could not reach {missing} "
                    f"within {timeout:g} s; start every worker of TF_CONFIG (each with its own "
                    f"task), check the addresses and the firewall, or wait longer with "
                    f"{TIMEOUT_VARIABLE}=SECONDS.")
            if waiting:
                time.sleep(0.2)
    finally:
        listener.close()


def multiworker_strategy(cluster: Cluster | None = None, timeout: float | None = None):
    """A ``MultiWorkerMirroredStrategy`` for the cluster of ``TF_CONFIG``, once every other
    task answers (:func:`wait_for_peers`). Must run before any TensorFlow operation in the
    process; raises :class:`InputError` when ``TF_CONFIG`` is missing or malformed, or a
    worker cannot be reached."""
    cluster = cluster or read_tf_config()
    if cluster is None:
        raise InputError("--strategy multiworker needs TF_CONFIG, the cluster's addresses and this "
                         "worker's task, set in every worker's environment; see docs/multiworker.md.")
    wait_for_peers(cluster, timeout)
    try:
        return _strategy_class()()
    except RuntimeError as error:
        if "program startup" not in str(error):
            raise
        raise RuntimeError("The multi-worker strategy must be created before any TensorFlow "
                           "operation runs in this process: call "
                           "cxrlib.runs.distributed.multiworker_strategy() first, and pass it "
                           "to train(strategy=...).") from error


_CLASS = None


def _strategy_class():
    """``MultiWorkerMirroredStrategy`` with a ``reduce`` that Keras 3's ``fit`` can use."""
    global _CLASS
    if _CLASS is None:
        import tensorflow as tf

        class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
            """Keras 3's ``fit`` reduces a nested batch (to build the model) and each step's
            scalar logs with ``axis=0``; TensorFlow's ``reduce`` takes one value, and an axis
            only where the value has one. Reduced leaf by leaf, a scalar across the replicas."""

            def reduce(self, reduce_op, value, axis):
                def one(leaf):
                    rank = getattr(leaf, "values", (leaf,))[0].shape.rank
                    return super(KerasMultiWorkerStrategy, self).reduce(
                        reduce_op, leaf, None if rank == 0 else axis)
                return tf.nest.map_structure(one, value)

        _CLASS = KerasMultiWorkerStrategy
    return _CLASS


def keras_ready(strategy):
    """``strategy`` itself; a plain ``MultiWorkerMirroredStrategy`` made elsewhere gets the
    ``reduce`` of :func:`multiworker_strategy`'s (its class becomes that subclass, which adds
    nothing else)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
            and not isinstance(strategy, _strategy_class()):
        strategy.__class__ = _strategy_class()
    return strategy


@dataclass(frozen=True)
class Role:
    """This process's part in a run: the chief or another worker, of how many."""

    chief: bool = True
    task: str = "worker 0"
    workers: int = 1
    replicas: int = 1


def worker_role(strategy) -> Role:
    """The role of this process under ``strategy`` (any strategy: one worker unless it is a
    multi-worker one with a cluster)."""
    import tensorflow as tf

    replicas = int(strategy.num_replicas_in_sync)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return Role(replicas=replicas)
    resolver = strategy.cluster_resolver
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = sum(len(jobs.get(job, [])) for job in TASK_TYPES) or 1
    task_type = getattr(resolver, "task_type", None)
    index = getattr(resolver, "task_id", None)
    return Role(chief=workers == 1 or is_chief_task(task_type, index, set(jobs)),
                task=f"{task_type or 'worker'} {index or 0}", workers=workers, replicas=replicas)


def share(strategy, role: Role, values: Sequence[float]) -> list[list[float]]:
    """Every worker's ``values`` (one row per worker, the chief's first), by one all-gather:
    how the group agrees on something before it goes on. Every worker must call it at the
    same point. With one worker, ``[values]``."""
    if role.workers == 1:
        return [list(values)]
    import tensorflow as tf

    mine = [1.0 if role.chief else 0.0, *map(float, values)]
    local = max(1, len(strategy.extended.worker_devices))   # this worker's replicas

    @tf.function(autograph=False)
    def gather():
        return strategy.gather(strategy.run(lambda: tf.constant([mine], tf.float64)), axis=0)

    rows = gather().numpy().tolist()[::local]   # each worker's replicas gave the same row
    rows.sort(key=lambda row: -row[0])
    return [row[1:] for row in rows]


def worker_dir(out: str | os.PathLike, role: Role) -> Path:
    """The temporary folder where a worker other than the chief works on the run in ``out``:
    the same path each time (so a restarted worker finds its backup), removed once the run
    has finished."""
    digest = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"cxrlib-worker-{digest}-{role.task.replace(' ', '')}"
