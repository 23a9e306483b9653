"""Batches taken from the input pipeline on a background thread, so the main thread never sits
inside tf.data: it waits in short slices, runs signal handlers between them, and gives up with
one line when no batch comes for config.data.max_wait_seconds (a source with no usable record
would otherwise be read in an endless loop, and the main thread blocked in GetNext ignores
SIGTERM)."""

import queue
import threading
import time
from typing import Callable, Iterator

from vlalign.data.sources import Monitor
from vlalign.data.spec import DataError

POLL_SECONDS = 0.1


class DataStall(DataError):
  """No batch came for config.data.max_wait_seconds; the message names each source and what
  its readers skipped."""


class Fetcher:
  """Takes items from `it` on a daemon thread, one ahead of the consumer."""

  def __init__(self, it: Iterator, monitors: list[Monitor], max_wait: float):
    self._it, self._monitors, self._max_wait = it, monitors, max_wait
    self._queue = queue.Queue(maxsize=1)
    self._closing = threading.Event()
    self._thread, self._error = None, None

  def _run(self) -> None:
    while not self._closing.is_set():
      try:
        item = (next(self._it), None)
      except BaseException as e:  # pylint: disable=broad-except  (handed to the consumer)
        item = (None, e)
      while not self._closing.is_set():
        try:
          self._queue.put(item, timeout=POLL_SECONDS)
          break
        except queue.Full:
          continue
      if item[1] is not None:
        return

  def get(self, interrupted: Callable[[], bool] | None = None):
    """The next item; None as soon as `interrupted()` is true while waiting; DataStall after
    max_wait seconds without one. The iterator's own errors (StopIteration ...) come through."""
    if self._error is not None:  # the iterator ended (or failed): so it stays
      raise self._error
    if self._thread is None:
      self._thread = threading.Thread(target=self._run, name='vlalign-input', daemon=True)
      self._thread.start()
    t0 = time.monotonic()
    while True:
      try:
        item, error = self._queue.get(timeout=POLL_SECONDS)
      except queue.Empty:
        if interrupted is not None and interrupted():
          return None
        waited = time.monotonic() - t0
        if waited > self._max_wait:
          raise DataStall(self.stall_message(waited)) from None
        continue
      if error is not None:
        self._error = error
        raise error
      return item

  def stall_message(self, waited: float) -> str:
    """The one line of a stall: how long, and per source what its readers produced."""
    return (f'config.data.sources: no batch in {waited:.0f} s (config.data.max_wait_seconds='
            f'{self._max_wait:g}); no usable record comes from ' + '; '.join(
                m.describe() for m in self._monitors))

  def close(self, timeout: float = 5.0) -> None:
    """Ends the readers (they stop at their next record, no further file opens) and the thread."""
    self._closing.set()
    for m in self._monitors:
      m.cancelled.set()
    if self._thread is not None:
      self._thread.join(timeout)
    if self._thread is None or not self._thread.is_alive():
      self._it = None  # the pipeline goes now (a reader stuck in I/O keeps it until it returns)
