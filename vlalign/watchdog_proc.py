"""The out-of-process half of preemption.PeerWatchdog, run as a script (standard library only).

The watchdog thread needs the GIL; a main thread blocked in a native call that holds it (seen
under heavy load, a peer SIGKILLed) starves the thread, and JAX's heartbeat then aborts the
process with a C++ stack trace instead of one line. This process needs nothing from its
parent: the parent writes the number of each completed step on its stdin; when no line comes for
`timeout` seconds it prints `message` (with {step}) on the shared stderr and SIGKILLs the parent.
The parent closing the pipe (close(), or the parent ending) ends this process quietly.

Usage: python watchdog_proc.py PID TIMEOUT_S MESSAGE
"""

import os
import select
import signal
import sys
import time


def watch(fd: int, pid: int, timeout: float, message: str) -> int:
  """Runs until EOF on fd (0) or a timeout (1, after killing pid)."""
  last, step, pending = None, '', b''
  while True:
    wait = None if last is None else timeout - (time.monotonic() - last)
    if wait is not None and wait <= 0:
      sys.stderr.write(message.format(step=step) + '\n')
      sys.stderr.flush()
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      return 1
    ready, _, _ = select.select([fd], [], [], wait)
    if not ready:
      continue
    chunk = os.read(fd, 4096)
    if not chunk:
      return 0
    *lines, pending = (pending + chunk).split(b'\n')
    if lines:
      step, last = lines[-1].decode(), time.monotonic()


if __name__ == '__main__':
  sys.exit(watch(sys.stdin.fileno(), int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
