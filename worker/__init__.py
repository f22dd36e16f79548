"""The pairshift worker: every workflow and activity of the project on task queue `pairshift`."""

from worker.main import build_worker, run_worker

__all__ = ["build_worker", "run_worker"]
