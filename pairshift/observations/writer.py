"""The non-blocking path from the hot path (router, API) to :func:`~pairshift.observations.store.store_batch`.

:class:`ObservationWriter` holds a bounded in-memory queue flushed by a daemon thread by size and by time;
when full it drops the *oldest* item and counts it, so a caller is never blocked by a slow or unreachable
registry.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from pairshift.observations.store import BatchRejected, LossIn, ObservationIn, store_batch, store_losses
from pairshift.registry.store import Registry
from pairshift.telemetry import metrics

log = logging.getLogger(__name__)


class ObservationWriter:
    """A bounded, batched, non-blocking path from the hot path to the store.

    ``put`` appends to an in-memory deque and returns; a daemon thread flushes up to ``batch_size`` items
    whenever that many are queued or ``flush_interval_s`` has passed. When the queue is full the oldest item
    is dropped (``dropped`` counts them): fresh telemetry matters more to a gate than old. A failed flush puts
    the batch back (newest first wins the space) and is retried at the next interval; a batch the store
    refuses is split and only the refused items are discarded (``rejected``).

    What it drops is not forgotten: the drops are counted per (deployment, migration, variant) and, at the
    next successful flush, reported to ``losses`` (with a registry: the ``observation_losses`` of the stage
    live then), so a canary gate knows how much of its evidence never arrived and does not pass on it.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        sink: Callable[[list[ObservationIn]], Any] | None = None,
        losses: Callable[[list[LossIn]], Any] | None = None,
        max_queue: int = 100_000,
        batch_size: int = 5_000,
        flush_interval_s: float = 1.0,
    ) -> None:
        if (registry is None) == (sink is None):
            raise ValueError("ObservationWriter needs exactly one of registry or sink")
        self._sink = sink or self._registry_sink(registry)  # type: ignore[arg-type]
        self._loss_sink = losses if registry is None else self._registry_loss_sink(registry)
        self._lost: dict[tuple[str, str | None, str], int] = {}  # dropped, not yet reported
        self._queue: deque[ObservationIn] = deque(maxlen=max_queue)
        self._lock = threading.Lock()  # held only for O(1)/O(batch) deque work, never across I/O
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()  # one flush at a time (thread vs an explicit flush())
        self._thread: threading.Thread | None = None
        self.max_queue, self.batch_size, self.flush_interval_s = max_queue, batch_size, flush_interval_s
        self.written = self.dropped = self.rejected = self.failed_flushes = 0
        self._failing = False

    @staticmethod
    def _registry_sink(registry: Registry) -> Callable[[list[ObservationIn]], Any]:
        def write(batch: list[ObservationIn]) -> int:
            with registry.session() as s:
                return store_batch(s, batch)

        return write

    @staticmethod
    def _registry_loss_sink(registry: Registry) -> Callable[[list[LossIn]], Any]:
        def write(losses: list[LossIn]) -> int:
            with registry.session() as s:
                return store_losses(s, losses)

        return write

    def _count_lost(self, items: Any) -> None:
        # Called under self._lock.
        for o in items:
            key = (o.deployment, o.migration, o.variant)
            self._lost[key] = self._lost.get(key, 0) + 1

    def _report_losses(self) -> None:
        with self._lock:
            lost, self._lost = self._lost, {}
        if not lost or self._loss_sink is None:
            return
        report = [LossIn(deployment=d, migration=m, variant=v, lost=n) for (d, m, v), n in lost.items()]
        try:
            self._loss_sink(report)
        except Exception as exc:  # noqa: BLE001 - keep the counts for the next flush
            log.warning("could not report %d lost observation(s): %s", sum(lost.values()), exc)
            with self._lock:
                for key, n in lost.items():
                    self._lost[key] = self._lost.get(key, 0) + n

    @property
    def unreported_losses(self) -> int:
        return sum(self._lost.values())

    def start(self) -> ObservationWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pairshift-observations", daemon=True)
            self._thread.start()
        return self

    def put(self, item: ObservationIn) -> None:
        """Queue one observation; never blocks on I/O. When full, the oldest queued item is dropped."""
        with self._lock:
            if len(self._queue) == self.max_queue:
                self._count_lost([self._queue[0]])
                self.dropped += 1
                metrics.OBSERVATIONS.labels("writer", "dropped").inc()
            self._queue.append(item)  # a full deque with maxlen drops its left (oldest) end
            size = len(self._queue)
        if size >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _take(self) -> list[ObservationIn]:
        with self._lock:
            n = min(self.batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _requeue(self, batch: list[ObservationIn]) -> None:
        with self._lock:
            room = self.max_queue - len(self._queue)
            keep = batch[-room:] if room > 0 else []
            self._count_lost(batch[: len(batch) - len(keep)])
            self.dropped += len(batch) - len(keep)
            metrics.OBSERVATIONS.labels("writer", "dropped").inc(len(batch) - len(keep))
            self._queue.extendleft(reversed(keep))

    def flush(self) -> int:
        """Write everything queued now (synchronously); returns how many. Stops at a failing store."""
        written = 0
        with self._flush_lock:
            while batch := self._take():
                if not self._write(batch):
                    break
                written += len(batch)
            if self._lost and not self._failing:
                self._report_losses()  # once a flush: a failed report waits for the next one
        return written

    def _write(self, batch: list[ObservationIn]) -> bool:
        try:
            self._sink(batch)
        except BatchRejected as exc:
            return self._write_accepted_part(batch, exc)
        except Exception as exc:  # noqa: BLE001 - any store failure: keep the data, retry later
            self.failed_flushes += 1
            if not self._failing:
                log.warning("observation store unreachable, keeping %d queued: %s", len(batch), exc)
                self._failing = True
            self._requeue(batch)
            return False
        if self._failing:
            log.info("observation store reachable again")
            self._failing = False
        self.written += len(batch)
        metrics.observe_stored("writer", batch)
        return True

    def _write_accepted_part(self, batch: list[ObservationIn], exc: BatchRejected) -> bool:
        # Store-side refusals are permanent (unknown deployment/pair): retrying them would loop forever.
        # Every bad item is named (bad_indexes): only those are discarded, however many; the good ones are
        # written. Only a refusal naming no index (an oversized batch) loses the batch.
        if exc.bad_indexes is not None:
            bad = set(exc.bad_indexes)
        elif exc.total_bad > len(exc.errors):
            bad = set(range(len(batch)))
        else:
            bad = {e.index for e in exc.errors}
        log.warning("observation store refused %d item(s): %s", len(bad), exc)
        self.rejected += len(bad)
        metrics.OBSERVATIONS.labels("writer", "refused").inc(len(bad))
        rest = [o for i, o in enumerate(batch) if i not in bad]
        return self._write(rest) if rest else True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and flush what is queued (best effort when the store is down)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.flush()

    def __enter__(self) -> ObservationWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
