"""One run per workdir: <workdir>/run.lock holds the host and pid of the run that owns it.

The lock file is created atomically (O_CREAT | O_EXCL) by process 0 of a run, touched every
REFRESH_S seconds while the run lives, and removed when the run ends. A second run on the same
workdir stops with one line naming the owner. A lock left by a run that died without removing
it (SIGKILL, a crash, a lost machine) is stale and taken over with a warning: on the same host
as soon as its pid no longer runs; from any host once it has not been touched for STALE_S
seconds (a preempted pod restarting on new machines).
"""

import contextlib
import json
import logging
import os
import socket
import threading
import time

LOCK_NAME = 'run.lock'
REFRESH_S = 30.0
STALE_S = 300.0


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


def _stale(path: str, host, pid) -> str:
  """Why the lock's owner is gone ('' when it may be alive)."""
  if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
    return 'no longer running'
  try:
    age = time.time() - os.path.getmtime(path)
  except OSError:
    return ''
  return f'not touched for {age:.0f} s' if host is not None and age > STALE_S else ''


def acquire(workdir: str) -> str:
  """Takes <workdir>/run.lock (or a stale one, see the module doc); WorkdirLockedError when a
  live run holds it. Returns the lock's path."""
  path = os.path.join(workdir, LOCK_NAME)
  for _ in range(3):
    if _create(path):
      return path
    owner = _owner(path)
    host, pid = owner.get('host'), owner.get('pid')
    why = _stale(path, host, pid)
    if why:
      logging.warning('took over the stale lock %s of pid %s on %s (%s)', path, pid, host, why)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    if host is not None:  # a live run here, or a run on another host (not checkable)
      raise WorkdirLockedError(
          f'workdir {workdir} is in use by another run (pid {pid} on {host}, lock {path}); '
          f'use another --workdir, or delete the lock file once that run is known to be gone '
          f'(a lock not touched for {STALE_S:.0f} s is taken over)')
    time.sleep(0.1)  # an empty file: its owner is writing it
  raise WorkdirLockedError(f'workdir {workdir}: could not take the lock {path}; delete it if no '
                           f'run uses this workdir')


class Refresher:
  """Touches the lock every REFRESH_S seconds (a daemon thread) so that it never looks stale
  while its run lives."""

  def __init__(self, path: str):
    self._path, self._done = path, threading.Event()
    threading.Thread(target=self._run, name='vlalign-workdir-lock', daemon=True).start()

  def _run(self) -> None:
    while not self._done.wait(REFRESH_S):
      with contextlib.suppress(OSError):
        os.utime(self._path)

  def stop(self) -> None:
    self._done.set()


def release(path: str) -> None:
  """Removes the lock when this process still owns it."""
  if _owner(path).get('pid') == os.getpid():
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
