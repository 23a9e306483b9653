"""One run per workdir: <workdir>/run.lock holds the host and pid of the run that owns it.

The lock file is created atomically (O_CREAT | O_EXCL) by process 0 of a run and removed when
the run ends. A second run on the same workdir stops with one line naming the owner. A lock
left by a run that died without removing it (SIGKILL, a crash, a lost machine) is stale: on
the same host it is taken over automatically when its pid no longer runs (with a warning); a
lock written on another host cannot be checked from here, and the message says to delete the
file once that run is known to be gone.
"""

import contextlib
import json
import logging
import os
import socket
import time
from typing import Iterator

LOCK_NAME = 'run.lock'


class WorkdirLockedError(RuntimeError):
  """Another run holds the workdir."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # a process of another user: it exists
    return True
  return True


def _create(path: str) -> bool:
  """Writes the lock atomically; False when it exists already."""
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    json.dump({'host': socket.gethostname(), 'pid': os.getpid(), 'started': time.time()}, f)
  return True


def _owner(path: str) -> dict:
  try:
    with open(path) as f:
      owner = json.load(f)
    return owner if isinstance(owner, dict) else {}
  except (OSError, ValueError):
    return {}  # removed meanwhile, or a half-written / foreign file


def acquire(workdir: str) -> str:
  """Takes <workdir>/run.lock (or a stale one, see the module doc); WorkdirLockedError when a
  live run holds it. Returns the lock's path."""
  path = os.path.join(workdir, LOCK_NAME)
  for _ in range(3):
    if _create(path):
      return path
    owner = _owner(path)
    host, pid = owner.get('host'), owner.get('pid')
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
      logging.warning('took over the stale lock %s of pid %d on %s (no longer running)', path,
                      pid, host)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    if host is not None:  # a live run here, or a run on another host (not checkable)
      raise WorkdirLockedError(
          f'workdir {workdir} is in use by another run (pid {pid} on {host}, lock {path}); '
          f'use another --workdir, or delete the lock file once that run is known to be gone')
    time.sleep(0.1)  # an empty file: its owner is writing it
  raise WorkdirLockedError(f'workdir {workdir}: could not take the lock {path}; delete it if no '
                           f'run uses this workdir')


def release(path: str) -> None:
  """Removes the lock when this process still owns it."""
  if _owner(path).get('pid') == os.getpid():
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def held(workdir: str, owner: bool = True) -> Iterator[None]:
  """The lock of `workdir` for the duration of the block (taken only when `owner`: process 0
  of a multi-process run holds it for the run)."""
  path = acquire(workdir) if owner else None
  try:
    yield
  finally:
    if path:
      release(path)
