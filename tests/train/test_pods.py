"""Multi-process runs, preemption (SIGKILL, SIGTERM), a damaged checkpoint and the NaN guard,
all through `python -m vlalign.main` on the tiny demo config, against one uninterrupted run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12
COMMON = (f'--config.total_steps={STEPS}', '--config.checkpoint_every=3', '--config.log_every=1',
          '--config.debug.record_example_ids=True')


def _env(cache, devices=1):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu',
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _cmd(workdir, *overrides):
  return [sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
          f'--workdir={workdir}', *COMMON, *overrides]


def run(workdir, cache, *overrides, devices=1, check=True):
  proc = subprocess.run(_cmd(workdir, *overrides), cwd=ROOT, env=_env(cache, devices),
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def losses(workdir) -> dict[int, float]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


def example_ids(workdir, process=0) -> dict[int, list[str]]:
  """Step -> this process's example ids; a step a resumed run repeated keeps its last line."""
  with open(os.path.join(workdir, 'example_ids', f'process_{process}.jsonl')) as f:
    return {r['step']: r['ids'] for r in map(json.loads, f)}


def checkpoint_steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def final_params(workdir) -> list[np.ndarray]:
  step = checkpoint_steps(workdir)[-1]
  assert step == STEPS
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  ckptr = ocp.StandardCheckpointer()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whatever topology wrote it
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                        ckptr.metadata(path).item_metadata.tree)
  tree = ckptr.restore(path, target)
  leaves = [np.asarray(x) for x in jax.tree.leaves(tree['params'])]
  assert leaves
  return leaves


def assert_same_params(a, b, atol=0.0):
  assert len(a) == len(b)
  diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
  assert diff <= atol, diff


@pytest.fixture(scope='module')
def straight(tmp_path_factory, cache):
  workdir = tmp_path_factory.mktemp('straight')
  run(workdir, cache)
  return workdir


@pytest.fixture(scope='module')
def straight_batch(tmp_path_factory, cache):
  """One process of 4 devices, host_split 'batch': the reference of the 2 x 2 process runs."""
  workdir = tmp_path_factory.mktemp('straight_batch')
  run(workdir, cache, '--config.data.host_split=batch', devices=4)
  return workdir


def assert_pod_equals_one(two, one):
  """The two hosts' ids side by side are the one-process run's at every step; losses rtol 1e-5
  and parameters 1e-5 (the cross-process all-reduce sums in another order)."""
  ids_one, ids_two = example_ids(one), [example_ids(two, p) for p in range(2)]
  assert sorted(ids_one) == list(range(1, STEPS + 1))
  assert all(ids_two[0][s] + ids_two[1][s] == ids_one[s] for s in ids_one)
  want, got = losses(one), losses(two)
  assert sorted(got) == list(range(1, STEPS + 1))  # process 0 alone wrote the metrics
  np.testing.assert_allclose([got[s] for s in sorted(want)], [want[s] for s in sorted(want)],
                             rtol=1e-5)
  assert_same_params(final_params(two), final_params(one), atol=1e-5)


def test_two_processes_of_two_devices_match_one_process_of_four(straight_batch, tmp_path, cache):
  """launch/local.sh 2 x 2 CPU devices, stopped at step 5 and resumed, against 1 x 4 straight,
  with host_split 'batch' (the same global batches for any process count): the same examples
  at every step (the two hosts' ids side by side)."""
  one = straight_batch
  two = tmp_path / 'two'
  for extra in ('--config.stop_at_step=5', '--config.stop_at_step=0'):
    proc = subprocess.run(['bash', 'launch/local.sh', '2', *_cmd(two)[3:],
                           '--config.data.host_split=batch', extra], cwd=ROOT,
                          env=_env(cache, 2), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
  assert "mesh {'data': 4} on 4 devices, 2 processes" in proc.stderr
  assert 'Resumed from checkpoint at step 5' in proc.stderr
  assert_pod_equals_one(two, one)


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _start_pod(workdir, cache, logs, *overrides):
  """Two processes of 2 CPU devices each, host_split 'batch', stderr into logs/p<i>.log."""
  port = _free_port()
  os.makedirs(logs, exist_ok=True)
  return [subprocess.Popen(
      [sys.executable, '-m', 'vlalign.main', f'--coordinator=127.0.0.1:{port}',
       '--num_processes=2', f'--process_id={i}', *_cmd(workdir)[3:],
       '--config.data.host_split=batch', *overrides], cwd=ROOT, env=_env(cache, 2),
      stdout=subprocess.DEVNULL, stderr=open(os.path.join(logs, f'p{i}.log'), 'w'))
          for i in range(2)]


def _wait_for_steps(workdir, process, steps, procs, timeout=600):
  """Waits until `process` has started `steps` steps (its example-id lines)."""
  path = os.path.join(workdir, 'example_ids', f'process_{process}.jsonl')
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for _ in f) >= steps:
          return
    time.sleep(0.05)
  raise AssertionError(f'process {process} did not reach step {steps}')


def _read(path) -> str:
  with open(path) as f:
    return f.read()


# The pod runs below skip the held-out evaluation (not under test here); their train step is the
# one test_two_processes_... compiled (a compilation-cache hit). The periodic async checkpoints
# stay: their finishing thread is where orbax used to move JAX's preemption counter back.
POD_QUICK = ('--config.evals.heldout=False',)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(straight_batch, tmp_path, cache):
  """Pod-safe preemption: only process 1 gets SIGTERM. JAX's preemption sync point makes both
  stop after the same step; both checkpoint it (one collective save) and exit 0 within 120 s;
  the resumed run equals the uninterrupted one. Process 0 (which also hosts the coordination
  service) is frozen while the signal arrives, so neither process can run more than one step
  before the notice is shared, however fast the steps are (JAX polls for SIGTERM once a second)."""
  two, logs = tmp_path / 'two', tmp_path / 'logs'
  procs = _start_pod(two, cache, logs, *POD_QUICK)
  try:
    _wait_for_steps(two, 1, 2, procs)
    procs[0].send_signal(signal.SIGSTOP)
    procs[1].send_signal(signal.SIGTERM)
    time.sleep(2)
    procs[0].send_signal(signal.SIGCONT)
    codes = [p.wait(timeout=120) for p in procs]
  finally:
    for p in procs:
      p.kill()
  text = [_read(logs / f'p{i}.log') for i in range(2)]
  assert codes == [0, 0], [t[-2000:] for t in text]
  saved = [int(t.split('received: saved a checkpoint at step ')[1].split(';')[0]) for t in text]
  assert saved[0] == saved[1] and 2 <= saved[0] < STEPS, saved
  assert checkpoint_steps(two)[-1] == saved[0]
  again = subprocess.run(['bash', 'launch/local.sh', '2', *_cmd(two)[3:],
                          '--config.data.host_split=batch', *POD_QUICK], cwd=ROOT,
                         env=_env(cache, 2), capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-4000:]
  assert f'Resumed from checkpoint at step {saved[0]}' in again.stderr
  assert_pod_equals_one(two, straight_batch)


PEER_TIMEOUT_S = 10


@pytest.mark.slow
def test_a_killed_peer_ends_the_other_process_with_one_line(tmp_path, cache):
  """Process 1 is SIGKILLed mid-run: process 0 does not wait for ever in the next collective;
  it exits 1 with one line naming config.peer_timeout_s within that time (plus the step in
  flight and a 60 s margin for a loaded CI machine)."""
  logs = tmp_path / 'logs'
  procs = _start_pod(tmp_path / 'w', cache, logs, *POD_QUICK,
                     f'--config.peer_timeout_s={PEER_TIMEOUT_S}')
  try:
    _wait_for_steps(tmp_path / 'w', 1, 2, procs)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    code = procs[0].wait(timeout=PEER_TIMEOUT_S + 120)
    elapsed = time.time() - killed
  finally:
    for p in procs:
      p.kill()
  text = _read(logs / 'p0.log')
  assert code != 0, text[-2000:]
  # The watchdog's line (the survivor waits in a collective) or the failed collective's
  # (gloo saw the connection close), never JAX's abort at its shutdown barrier.
  assert 'a peer process died or hangs' in text, text[-2000:]
  assert 'CoordinationServiceAgent' not in text, text[-2000:]
  assert elapsed < PEER_TIMEOUT_S + 60, elapsed


def test_checkpoints_leave_the_preemption_sync_point_to_the_train_loop(tmp_path, monkeypatch):
  """JAX's sync point stops every process at (the largest step any asked about) + 1, so only
  the train loop may ask, once per step: orbax's manager asked too, from its save_finalize
  thread with the step of a finished async save, which put a process's counter back."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from vlalign import checkpoint  # pylint: disable=g-import-not-at-top
  asked = []
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point',
                      lambda step: asked.append(step) or False)
  manager = checkpoint.make_manager(str(tmp_path), save_every=1, keep=2)
  for step in (1, 2):
    assert manager.should_save(step)
    checkpoint.save(manager, step, {'w': np.arange(3.0)}, {'position': step})
  assert checkpoint.saved_steps(manager) == [1, 2]
  manager.close()
  assert not asked


def test_a_failed_compile_barrier_is_one_line_and_exit_1(monkeypatch, capsys):
  """After compiling, the processes meet at a coordination-service barrier; when it fails (a
  peer lost, or later than the bound) the process ends with one line, not a traceback."""
  from vlalign import preemption  # pylint: disable=g-import-not-at-top

  class Client:
    def wait_at_barrier(self, name, timeout_in_ms):
      assert timeout_in_ms == preemption.COMPILE_SKEW_S * 1000
      raise jax.errors.JaxRuntimeError(f'DEADLINE_EXCEEDED: Barrier timed out. Id: {name}\nmore')

  def exit_(code):
    raise SystemExit(code)

  monkeypatch.setattr(preemption, '_client', Client)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(preemption.os, '_exit', exit_)
  with pytest.raises(SystemExit) as e:
    preemption.align_processes('vlalign_compiled_0')
  assert e.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f'vlalign: process 0 of 2: the processes did not all reach vlalign_compiled_0 '
                 f'within 3600 s (a peer process died or hangs): DEADLINE_EXCEEDED: Barrier '
                 f'timed out. Id: vlalign_compiled_0'], err


def test_sigkill_mid_run_then_restart_equals_uninterrupted(straight, tmp_path, cache):
  proc = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, env=_env(cache), stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      ckpt = tmp_path / 'checkpoints'
      if ckpt.is_dir() and any(d.isdigit() and int(d) >= 6 for d in os.listdir(ckpt)):
        break
      time.sleep(0.2)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    proc.kill()
  killed_at = checkpoint_steps(tmp_path)[-1]
  assert 6 <= killed_at < STEPS
  again = run(tmp_path, cache)
  assert 'Resumed from checkpoint at step' in again.stderr
  assert example_ids(tmp_path) == example_ids(straight)  # the same examples at every step
  assert_same_params(final_params(tmp_path), final_params(straight))  # exactly, on CPU


def test_sigterm_exits_0_with_a_checkpoint_at_that_step_and_resumes_exactly(straight, tmp_path,
                                                                            cache):
  proc = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, env=_env(cache), stderr=subprocess.PIPE,
                          text=True)
  lines = []
  try:
    for line in proc.stderr:
      lines.append(line)
      if f'step 4/{STEPS}' in line:
        proc.send_signal(signal.SIGTERM)
        break
    _, rest = proc.communicate(timeout=120)
  finally:
    proc.kill()
  log = ''.join(lines) + rest
  assert proc.returncode == 0, log[-3000:]
  saved = int(log.split('SIGTERM received: saved a checkpoint at step ')[1].split(';')[0])
  assert 4 <= saved < STEPS and checkpoint_steps(tmp_path)[-1] == saved
  again = run(tmp_path, cache)
  assert f'Resumed from checkpoint at step {saved}' in again.stderr
  assert example_ids(tmp_path) == example_ids(straight)
  assert_same_params(final_params(tmp_path), final_params(straight))


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(straight, tmp_path, cache):
  run(tmp_path, cache, '--config.stop_at_step=9')
  assert checkpoint_steps(tmp_path)[-2:] == [6, 9]
  state_dir = tmp_path / 'checkpoints' / '9' / 'state'
  damaged = 0
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
      damaged += 1
  assert damaged
  again = run(tmp_path, cache)
  assert 'checkpoint at step 9 does not read' in again.stderr
  assert 'Resumed from checkpoint at step 6' in again.stderr
  assert (tmp_path / 'checkpoints' / '9.damaged').is_dir()  # kept, out of the way
  assert_same_params(final_params(tmp_path), final_params(straight))


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_injected_nan_stop_keeps_the_last_good_checkpoint(tmp_path, cache):
  proc = run(tmp_path, cache, '--config.debug.nan_loss_at_steps=(8,)', check=False)
  assert proc.returncode != 0
  assert 'non-finite loss, gradient or updated state: 1 update(s) dropped by step 8' in proc.stderr
  assert 'config.nan_policy="stop"' in proc.stderr
  assert checkpoint_steps(tmp_path)[-1] == 6  # nothing written after the bad step


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_injected_nan_skip_counts_and_goes_on(straight, tmp_path, cache):
  run(tmp_path, cache, '--config.debug.nan_loss_at_steps=(5,7)', '--config.nan_policy=skip')
  with open(tmp_path / 'metrics.jsonl') as f:
    rows = {r['step']: r for r in map(json.loads, f) if 'train/loss' in r}
  assert np.isnan(rows[5]['train/loss']) and np.isnan(rows[7]['train/loss'])
  assert rows[4]['train/skipped_steps'] == 0 and rows[STEPS]['train/skipped_steps'] == 2
  want = losses(straight)
  assert rows[4]['train/loss'] == want[4]  # identical up to the first bad step
  assert np.isfinite(rows[STEPS]['train/loss'])
  # The dropped updates leave the parameters finite but different from the clean run.
  params = final_params(tmp_path)
  assert all(np.isfinite(p).all() for p in params)
  assert max(float(np.abs(a - b).max()) for a, b in zip(params, final_params(straight))) > 0
