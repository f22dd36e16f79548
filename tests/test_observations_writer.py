"""ObservationWriter: never blocks the caller, drops the oldest when full, flushes by size, time and on
close."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select
from test_router_support import ACTIVE_PAIR, DEPLOYMENT, apply_example

from pairshift.observations import BatchRejected, ItemError, ObservationIn, ObservationWriter
from pairshift.registry.models import Observation


def item(i: int, deployment: str = DEPLOYMENT) -> ObservationIn:
    return ObservationIn(
        deployment=deployment,
        pair=ACTIVE_PAIR,
        variant="control",
        unit=f"u{i}",
        latency_ms=float(i),
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.0,
        outcome="ok",
    )


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class Sink:
    """A store that records batches; can hang (a stuck database) or fail (an unreachable one)."""

    def __init__(self) -> None:
        self.batches: list[list[ObservationIn]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.fail = False

    def __call__(self, batch: list[ObservationIn]) -> None:
        self.entered.set()
        self.release.wait()
        if self.fail:
            raise ConnectionError("registry down")
        self.batches.append(batch)

    @property
    def written(self) -> list[float]:
        return [o.latency_ms for b in self.batches for o in b]


def test_a_full_queue_drops_the_oldest_and_never_blocks_the_caller():
    sink = Sink()
    sink.release.clear()  # the store hangs
    writer = ObservationWriter(sink=sink, max_queue=100, batch_size=10, flush_interval_s=0.01).start()
    writer.put(item(10_000))
    sink.entered.wait(5)  # the flusher is now stuck inside the store with one batch
    started = time.perf_counter()
    for i in range(1_000):
        writer.put(item(i))
    elapsed = time.perf_counter() - started
    assert writer.pending == 100 and writer.dropped == 900
    assert elapsed < 2.0  # 1,000 puts against a hung store returned (a blocked put would never return)
    sink.release.set()
    writer.close()
    assert sink.written == [10_000.0] + [float(i) for i in range(900, 1_000)]  # the newest 100 survived


def test_flushes_by_size_without_waiting_for_the_interval():
    sink = Sink()
    with ObservationWriter(sink=sink, batch_size=50, flush_interval_s=3600) as writer:
        for i in range(50):
            writer.put(item(i))
        wait_for(lambda: writer.written == 50)
        assert len(sink.batches) == 1


def test_flushes_by_time_when_the_batch_is_not_full():
    sink = Sink()
    with ObservationWriter(sink=sink, batch_size=10_000, flush_interval_s=0.02) as writer:
        writer.put(item(1))
        wait_for(lambda: writer.written == 1)


def test_close_flushes_what_is_queued():
    sink = Sink()
    writer = ObservationWriter(sink=sink, batch_size=10_000, flush_interval_s=3600).start()
    for i in range(7):
        writer.put(item(i))
    writer.close()
    assert sink.written == [float(i) for i in range(7)]


def test_a_failing_store_keeps_the_batch_for_the_next_flush():
    sink = Sink()
    sink.fail = True
    writer = ObservationWriter(sink=sink, batch_size=100, flush_interval_s=3600)
    for i in range(5):
        writer.put(item(i))
    assert writer.flush() == 0 and writer.failed_flushes == 1 and writer.pending == 5
    sink.fail = False
    assert writer.flush() == 5 and sink.written == [float(i) for i in range(5)]


def test_items_the_store_refuses_are_discarded_and_the_rest_written():
    written: list[list[ObservationIn]] = []

    def picky(batch: list[ObservationIn]) -> None:
        bad = [
            ItemError(index=i, field="deployment", msg="unknown")
            for i, o in enumerate(batch)
            if o.deployment == "gone"
        ]
        if bad:
            raise BatchRejected(bad)
        written.append(batch)

    writer = ObservationWriter(sink=picky, batch_size=100, flush_interval_s=3600)
    for i in range(4):
        writer.put(item(i, deployment="gone" if i == 2 else DEPLOYMENT))
    assert writer.flush() == 4
    assert writer.rejected == 1 and [o.latency_ms for o in written[0]] == [0.0, 1.0, 3.0]


def test_writes_to_a_registry(sqlite_registry):
    apply_example(sqlite_registry)
    with ObservationWriter(sqlite_registry, batch_size=500, flush_interval_s=0.05) as writer:
        for i in range(1_200):
            writer.put(item(i))
    with sqlite_registry.session() as s:
        assert s.scalar(select(func.count()).select_from(Observation)) == 1_200


def test_needs_exactly_one_destination(sqlite_registry):
    with pytest.raises(ValueError, match="exactly one"):
        ObservationWriter()
    with pytest.raises(ValueError, match="exactly one"):
        ObservationWriter(sqlite_registry, sink=Sink())
