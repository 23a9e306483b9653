"""Training through tf.data service end to end: `vlalign.tools.data_service` starts a dispatcher
and two workers on 127.0.0.1, `vlalign.main` (tiny config, data.service_address) trains to
completion on them, and both workers ran its job."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

from tests.train.test_main import ROOT, read_metrics, run_main


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(log, *args):
  return subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, '-m', 'vlalign.tools.data_service', *args, '--report_s=0.3',
       '--heartbeat_ms=200'], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))


def _wait_for(path, text, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if text in path.read_text(errors='replace'):
      return
    time.sleep(0.2)
  raise AssertionError(f'no {text!r} in {path} after {timeout} s:\n{path.read_text()[-2000:]}')


# The must-show, so CI runs it: about 50 s of CPU (three TensorFlow imports and a tiny
# run's compile); tests/data/test_service.py covers the hook, the refusals and two workers
# in-process.
def test_main_trains_to_completion_through_a_dispatcher_and_two_workers(tmp_path, cache):
  port = _free_port()
  logs = [tmp_path / name for name in ('dispatcher.log', 'worker0.log', 'worker1.log')]
  procs = []
  try:
    with open(logs[0], 'w') as log:
      procs.append(_start(log, 'dispatcher', f'--port={port}'))
    for i in (1, 2):
      with open(logs[i], 'w') as log:
        procs.append(_start(log, 'worker', f'--dispatcher=127.0.0.1:{port}',
                            f'--port={_free_port()}', '--host=127.0.0.1'))
    _wait_for(logs[0], 'dispatcher serving at', 120)
    _wait_for(logs[0], '2 worker(s) registered', 120)
    workdir = tmp_path / 'run'
    proc = run_main(workdir, cache, f'--config.data.service_address=127.0.0.1:{port}',
                    '--config.data.tfrecord_reader=graph', '--config.total_steps=4',
                    '--config.evals.heldout=False')
    assert 'from the tf.data service at 127.0.0.1' in proc.stderr
    assert [r['step'] for r in read_metrics(workdir) if 'train/loss' in r] == [2, 4]
    for path in logs[1:]:  # each worker ran the run's job (one task) while it trained
      tasks = [int(n) for n in re.findall(r'(\d+) task\(s\) running', path.read_text())]
      assert max(tasks) >= 1, path.read_text()[-2000:]
  finally:
    for p in procs:
      p.send_signal(signal.SIGTERM)
    for p in procs:
      try:
        p.wait(timeout=20)
      except subprocess.TimeoutExpired:
        p.kill()
  assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
  assert 'dispatcher stopping' in logs[0].read_text()
