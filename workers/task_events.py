"""Task events (what Flower and `celery events` show) published in batches, once a second.

A worker on the Redis broker runs an event loop whatever its pool, and Celery buffers its task events there, but
it flushes the buffer on the loop's next turn: in practice one Redis PUBLISH per event, three per task. That is
about 0.8 ms of a worker's CPU per task, as much as the rest of a no-op task (bench/floors). Flushed on a timer
instead, one PUBLISH carries every task event of the last second, in the form Celery already uses for a buffer
(`task.multi`, a list of events), which Flower and `celery events` read like any other.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps

# How late Flower may see a task's events: the worker publishes what it has at least this often.
FLUSH_SECONDS = 1.0
# ... and at once when this many are waiting (Celery's default, 24, would flush every 8th task).
BUFFER_LIMIT = 200


class BatchedTaskEvents(bootsteps.StartStopStep):
    """A consumer step after Celery's own `Events`: each event dispatcher it builds (one per broker connection)
    buffers the task events and publishes them on a timer; what is still buffered at a stop is published then."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._flushing: Any = None  # the timer entry

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        if dispatcher is None or not dispatcher.enabled:
            return
        dispatcher.buffer_group = frozenset({"task"})
        dispatcher.buffer_limit = BUFFER_LIMIT
        dispatcher.on_send_buffered = None  # Celery's: a flush on the loop's next turn, for every event
        timer = c.hub.timer if c.hub is not None else c.timer
        self._flushing = timer.call_repeatedly(FLUSH_SECONDS, dispatcher.flush)

    def stop(self, c: Any) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        if c.event_dispatcher is not None:
            # Until the next start (a consumer restarting after a lost broker connection) nothing would flush a
            # batch, and Celery hands the next dispatcher only what failed to go out: from now on each event goes
            # out at once, or waits in that outbound buffer.
            c.event_dispatcher.buffer_group = frozenset()
        self._flush(c)

    def shutdown(self, c: Any) -> None:
        # A warm shutdown stops the consumer before the pool, and Celery's Events step closes the dispatcher right
        # after this: whatever a task buffered in between (as `stop` ended batching) goes out now.
        self.stop(c)

    @staticmethod
    def _flush(c: Any) -> None:
        if c.event_dispatcher is not None:
            # On a broken connection they move to the dispatcher's outbound buffer, which Celery hands to the
            # next dispatcher it builds.
            c.event_dispatcher.flush()
