"""Stopping on a signal at the same step on every process, and a bound on waiting for peers.

One process: SIGTERM / SIGINT set a flag the train loop reads after each step; it checkpoints
that step and exits 0 (a second signal stops at once).

Several processes (jax.distributed): a signal seen by one process must stop all of them at the
same step, or one enters the collective checkpoint save while the others enter the next step's
all-reduce and both wait for ever. SIGTERM (the preemption notice of SLURM, Kubernetes and
Cloud TPU) goes to JAX's preemption service: jax.distributed.initialize installs its notifier,
which tells every process; `multihost_utils.reached_preemption_sync_point(step)`, called every
step, is True on all processes at the same step (the largest step any process reached, plus
one). SIGINT on one process is shared through JAX's
preemption service too (the handler sends this process a SIGTERM). No collective runs per
step.

A process whose peer died would wait in the next collective for ever: PeerWatchdog ends it with
one line when no step completes for config.peer_timeout_s seconds. Its thread needs the GIL,
which a main thread blocked in a native call may hold; a child process (watchdog_proc.py) that
needs nothing from this one backs it up BACKSTOP_GRACE_S later (one line, then SIGKILL), still
well before JAX's own heartbeat (peer_timeout_s + 60 s, main.py) would abort the process.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils

from vlalign import errors


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


class StopSignal:
  """Turns SIGTERM / SIGINT into a request to finish the step, checkpoint and exit; agreed on
  by every process of a multi-process run (see the module doc)."""

  def __init__(self):
    self.requested = errors.pending_signal()  # one that came after setup's last check
    self._old = {}
    self._multi = jax.process_count() > 1 and _client() is not None
    # In a multi-process run SIGTERM stays with JAX's preemption notifier.
    sigs = (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. an embedding application)
        pass

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # a second signal: stop at once
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    if self._multi:  # SIGINT joins the preemption protocol as a SIGTERM to this process
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> str:
    """'' to go on; else the reason to checkpoint `step` and exit (the same step on every
    process). All processes call this once per step, in the same steps."""
    if self._multi and multihost_utils.reached_preemption_sync_point(step):
      return 'SIGTERM (a preemption notice, shared by every process)'
    return '' if self._multi else self.requested

  def restore(self) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


# How long the processes may take to finish compiling one after another (one may hit the
# persistent compilation cache while another compiles for minutes). A peer that dies meanwhile
# is caught sooner by JAX's heartbeat (config.peer_timeout_s + 60 s, main.py).
COMPILE_SKEW_S = 3600.0


def align_processes(name: str, timeout_s: float = COMPILE_SKEW_S) -> None:
  """Multi-process runs: waits at a coordination-service barrier (not a device collective) until
  every process arrives, so that the first collective of a newly compiled step starts on all of
  them together (gloo sets up its connections with a 30 s deadline; processes that compiled at
  different speeds on a loaded host would miss it). A barrier that fails (a peer lost, or later
  than `timeout_s`) ends the process with one line and exit status 1."""
  client = _client()
  if jax.process_count() > 1 and client is not None:
    try:
      client.wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))
    except jax.errors.JaxRuntimeError as e:
      _exit_one_line(f'vlalign: process {jax.process_index()} of {jax.process_count()}: the '
                     f'processes did not all reach {name} within {timeout_s:.0f} s (a peer '
                     f'process died or hangs): {str(e).splitlines()[0]}')


def _exit_one_line(msg: str) -> None:
  """Logs `msg`, then errors.exit_now: on stderr, status 1 at once."""
  logging.error('%s', msg)
  errors.exit_now(msg)


BACKSTOP_GRACE_S = 20.0


class PeerWatchdog:
  """Multi-process runs: ends the process with one line and exit status 1 when no step has
  completed for `timeout_s` seconds (a peer died or hangs: the collectives would wait for ever);
  a child process (watchdog_proc.py) prints the line and SIGKILLs this one BACKSTOP_GRACE_S
  later if this thread could not run. Armed by the first `beat` (after compilation); idle in
  single-process runs unless `force`."""

  def __init__(self, timeout_s: float, workdir: str, force: bool = False,
               grace_s: float = BACKSTOP_GRACE_S):
    self.timeout_s = float(timeout_s)
    self._last = None
    self._step = 0
    self._done = threading.Event()
    self._workdir = workdir
    self._thread = self._child = None
    if jax.process_count() > 1 or force:
      self._thread = threading.Thread(target=self._watch, name='vlalign-peer-watchdog',
                                      daemon=True)
      self._thread.start()
      self._child = subprocess.Popen(
          [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        'watchdog_proc.py'), str(os.getpid()),
           str(self.timeout_s + grace_s), self._message('{step}', self.timeout_s + grace_s) +
           ' [its watchdog thread did not run: SIGKILLed by watchdog_proc.py]'],
          stdin=subprocess.PIPE, close_fds=True)

  def _message(self, step, waited: float) -> str:
    return (f'vlalign: process {jax.process_index()} of {jax.process_count()}: no step '
            f'completed for {waited:.0f} s after step {step} (config.peer_timeout_s): a peer '
            f'process died or hangs; exiting without a checkpoint (the run resumes from the last '
            f'one in {self._workdir}/checkpoints)')

  def beat(self, step: int) -> None:
    """Marks progress: `step` completed on this host (-1: restarts the clock, keeps the step)."""
    self._last = time.monotonic()
    self._step = step if step >= 0 else self._step
    if self._child is not None and not self._done.is_set():
      try:
        self._child.stdin.write(f'{self._step}\n'.encode())
        self._child.stdin.flush()
      except (BrokenPipeError, ValueError):  # the child is gone: the thread still watches
        self._child = None

  def _watch(self) -> None:
    while not self._done.wait(min(1.0, self.timeout_s / 10)):
      if self._last is not None and time.monotonic() - self._last > self.timeout_s:
        # The main thread waits in a collective: nothing else can end it.
        _exit_one_line(self._message(self._step, self.timeout_s))

  def close(self) -> None:
    """Disarms both halves (the child ends when its pipe closes)."""
    self._done.set()
    if self._child is not None:
      try:
        self._child.stdin.close()
        self._child.wait(timeout=10)
      except (BrokenPipeError, subprocess.TimeoutExpired):
        self._child.kill()
      self._child = None
