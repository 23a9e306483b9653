"""The peer watchdog's two halves: the thread (exit 1, one line) and the child process that
backs it up when the thread cannot get the GIL (one line, then SIGKILL)."""

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'vlalign', 'watchdog_proc.py')


@pytest.fixture
def victim():
  proc = subprocess.Popen(['sleep', '60'])
  yield proc
  proc.kill()
  proc.wait()


def _watch(victim, timeout):
  return subprocess.Popen([sys.executable, SCRIPT, str(victim.pid), str(timeout),
                           'gone after step {step}'], stdin=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_silence_kills_the_watched_process_with_one_line(victim):
  child = _watch(victim, 0.5)
  child.stdin.write('3\n7\n')
  child.stdin.flush()
  t0 = time.monotonic()
  assert child.wait(timeout=30) == 1
  assert victim.wait(timeout=10) == -9
  assert child.stderr.read().strip() == 'gone after step 7'
  assert time.monotonic() - t0 < 10


def test_beats_keep_it_alive_and_eof_ends_it_quietly(victim):
  child = _watch(victim, 1.0)
  for step in range(6):  # 1.2 s of beats every 0.2 s: longer than the timeout
    child.stdin.write(f'{step}\n')
    child.stdin.flush()
    time.sleep(0.2)
  child.stdin.close()
  assert child.wait(timeout=30) == 0
  assert victim.poll() is None and child.stderr.read() == ''


_BLOCKED = """
import ctypes, sys, time
from vlalign import preemption
dog = preemption.PeerWatchdog(1.0, '/w', force=True, grace_s=1.0)
dog.beat(4)
if sys.argv[1] == 'gil':
  ctypes.PyDLL(None).sleep(30)  # a native call that keeps the GIL: the thread cannot run
else:
  time.sleep(30)
"""


@pytest.mark.parametrize('hold', ['gil', 'free'])
def test_watchdog_ends_a_process_stuck_with_or_without_the_gil(hold):
  """Free GIL: the thread ends the process (exit 1). Held GIL: the child does (SIGKILL), each
  with one line naming config.peer_timeout_s."""
  proc = subprocess.run([sys.executable, '-c', _BLOCKED, hold], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  lines = [l for l in proc.stderr.splitlines() if l.startswith('vlalign:')]
  assert len(lines) == 1, proc.stderr[-2000:]
  assert 'after step 4 (config.peer_timeout_s)' in lines[0]
  if hold == 'gil':
    assert proc.returncode == -9 and 'SIGKILLed by watchdog_proc.py' in lines[0]
  else:
    assert proc.returncode == 1 and 'watchdog_proc' not in lines[0]
