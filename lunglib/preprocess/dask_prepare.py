"""Preparing patients on Dask: one task per patient, on this machine or on a cluster.

:func:`lunglib.preprocess.cache.cache_dataset` hands its patients here when it prepares more than
one in parallel. :func:`dask_client` gives the :class:`distributed.Client` to run them on:

- no scheduler: a :class:`distributed.LocalCluster` of ``workers`` processes on this machine,
  started for the call and closed after it (the course's default);
- an address (``tcp://host:8786``): the scheduler of a cluster started elsewhere (``dask
  scheduler`` and ``dask worker`` on other hosts, dask-jobqueue on Slurm ...). Its workers must
  have lunglib installed and see the dataset and the cache folder at the same paths as here;
- a :class:`distributed.Client` already connected: used as it is, and left open.

With no scheduler given and ``workers`` of 2 or more, an address in Dask's own configuration
(``$DASK_SCHEDULER_ADDRESS``, :func:`configured_scheduler`) is used, as by any Dask client.

Workers that die
----------------
When a worker process dies (the kernel's out-of-memory killer, a crash in native code, a host
lost) Dask runs its tasks again on another worker, up to the scheduler's ``allowed-failures``
(:data:`LOCAL_ALLOWED_FAILURES` on the LocalCluster started here; whatever the cluster was
configured with otherwise, Dask's default being 3); past that the task fails with
``KilledWorker``. Every task that was on the dying worker counts a failure, not only the one
that killed it, so each patient that failed that way is run once more alone: the innocent
finish, and a patient that kills its worker even alone is recorded as skipped, with
:data:`~lunglib.preprocess.cache.WORKER_DIED` as the reason. Since every file is written
atomically and always as the same bytes, a task cut short and run again leaves the same files
as one that ran once.

Task keys
---------
``lunglib-prepare-<cache key>-<digest of the cache folder and patient id>``: two clients that
prepare the same patients into the same folder on one scheduler share the tasks instead of doing
the work twice, and the scheduler's dashboard shows no patient id.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lunglib.datasets.base import CTDataset
from lunglib.preprocess.cache import WORKER_DIED, prepare_one
from lunglib.preprocess.volume import PrepareOptions
from lunglib.settings import Settings

if TYPE_CHECKING:  # distributed loads only when a dataset is prepared in parallel
    from distributed import Client

#: ``allowed-failures`` of the LocalCluster that :func:`dask_client` starts: a task is run again
#: once when its worker dies, then alone once more (see the module docstring).
LOCAL_ALLOWED_FAILURES = 1

#: Seconds to wait for a scheduler given by address before giving up.
CONNECT_TIMEOUT_S = 30

#: Set in the LocalCluster's worker processes over Dask's own. Dask sets glibc's
#: ``MALLOC_TRIM_THRESHOLD_`` to 64 KiB so that workers holding data give memory back at once;
#: that also freezes glibc's dynamic thresholds at their start, so a worker would take every array
#: of a volume from fresh pages and hand them back after, and prepare slower than a plain process.
#: These are the values the dynamic thresholds reach in a plain process (arrays up to 32 MiB stay
#: on the heap, which shrinks past 64 MiB free). C libraries other than glibc ignore them.
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 64 * 2**20}


@contextlib.contextmanager
def dask_client(scheduler: str | Client | None = None, workers: int = 2) -> Iterator[Client]:
    """A Dask client for the length of the block (see the module docstring).

    Parameters
    ----------
    scheduler : str, distributed.Client or None
        ``None`` starts a LocalCluster of ``workers`` processes (one thread each, started by
        ``spawn``, so never a fork of a process holding TensorFlow's threads; no dashboard; no
        memory limit of Dask's own: as before, the system's memory is the limit;
        :data:`WORKER_ENVIRON`). A string is a scheduler's address. A client is used as it is
        and not closed.
    workers : int, default 2
        Worker processes of the LocalCluster; ignored when ``scheduler`` is given.

    Raises
    ------
    ConnectionError
        When no scheduler answers at the address within :data:`CONNECT_TIMEOUT_S`.
    """
    import dask
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"no Dask scheduler answered at {scheduler}: {exc}") from exc
        with client:
            yield client
        return
    # for the cluster's whole life, so that a worker restarted after one died gets them too
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn",
                          "distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(
            n_workers=max(1, int(workers)), threads_per_worker=1, processes=True,
            dashboard_address=None, memory_limit=0, silence_logs=logging.ERROR,
            scheduler_kwargs={"allowed_failures": LOCAL_ALLOWED_FAILURES},
        )
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()


def configured_scheduler() -> str | None:
    """The scheduler address in Dask's configuration (``$DASK_SCHEDULER_ADDRESS``), if any."""
    import dask.config

    return dask.config.get("scheduler-address", None) or None


def task_key(folder: Path, patient_id: str, attempt: str = "") -> str:
    """The Dask key of preparing ``patient_id`` into ``folder`` (no patient id in clear)."""
    digest = hashlib.sha256(f"{Path(folder).resolve()}\0{patient_id}".encode()).hexdigest()
    return f"lunglib-prepare-{Path(folder).name}-{digest[:16]}{attempt}"


def prepare_on_dask(
    client: Client, dataset: CTDataset, ids: Sequence[str], settings: Settings,
    options: PrepareOptions, folder: Path, finish: Callable[[dict[str, object]], None],
) -> None:
    """Prepare ``ids`` into ``folder`` on ``client``'s workers; every QC row goes to ``finish``.

    One task per patient (:func:`~lunglib.preprocess.cache.prepare_one`), results taken as
    they arrive, in this process (the single writer of ``qc.csv``). A patient whose task failed
    with ``KilledWorker`` is run again alone; if that kills its worker too it is recorded as
    skipped (:data:`~lunglib.preprocess.cache.WORKER_DIED`). Any other failure of a task (it
    could not be sent, or lunglib is missing on a worker) is recorded as skipped with its reason.
    """
    from distributed import KilledWorker, as_completed

    def submit(pid: str, attempt: str = ""):
        return client.submit(prepare_one, dataset, pid, settings, options, folder,
                             key=task_key(folder, pid, attempt))

    futures = {submit(pid): pid for pid in ids}
    suspects = []
    for future in as_completed(futures):
        pid = futures.pop(future)
        try:
            finish(future.result())
        except KilledWorker:
            suspects.append(pid)
        except Exception as exc:  # the task could not even be sent or run
            finish(_failed(pid, exc))
        future.release()
    for pid in suspects:  # alone now: a KilledWorker can only be this patient's own doing
        future = submit(pid, "-alone")
        try:
            finish(future.result())
        except KilledWorker:
            finish({"id": pid, "status": "skipped", "reason": WORKER_DIED})
        except Exception as exc:
            finish(_failed(pid, exc))
        future.release()


def _failed(patient_id: str, exc: BaseException) -> dict[str, object]:
    return {"id": patient_id, "status": "skipped",
            "reason": f"worker failed: {type(exc).__name__}: {exc}"}
