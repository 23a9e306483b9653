"""Hostile or unlucky input to training and the tools (issue 18): every case ends in the
promised outcome (a checkpoint that exists, a fallback, one line and an exit status), no
traceback."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from vlalign import config_lib, errors, train, workdir_lock
from vlalign.config_lib import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(workdir, cache, *overrides, popen=False):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
         f'--workdir={workdir}', *overrides]
  if popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _last_line(stderr: str) -> str:
  return [l for l in stderr.strip().splitlines() if l.strip()][-1]


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(workdir / 'checkpoints') if d.isdigit())


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_keep_0_keeps_every_checkpoint_and_a_data_item_without_keys_falls_back(tmp_path, cache):
  """keep_checkpoints=0 keeps all (it used to keep none while logging a save); the newest
  checkpoint whose data item parses but lacks keys is set aside for the one before it."""
  proc = _main(tmp_path, cache, '--config.stop_at_step=4', '--config.keep_checkpoints=0',
               '--config.checkpoint_every=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _steps(tmp_path) == [1, 2, 3, 4]
  data_dir = tmp_path / 'checkpoints' / '4' / 'data'
  (name,) = [n for n in os.listdir(data_dir) if n.endswith('.json') or '.' not in n]
  with open(data_dir / name) as f:
    item = json.load(f)
  del item['hosts']
  with open(data_dir / name, 'w') as f:
    json.dump(item, f)
  again = _main(tmp_path, cache, '--config.stop_at_step=5', '--config.keep_checkpoints=0',
                '--config.checkpoint_every=1')
  assert again.returncode == 0, again.stderr[-3000:]
  assert "checkpoint at step 4 does not read (ValueError: the data item lacks ['hosts'])" in (
      again.stderr)
  assert 'Resumed from checkpoint at step 3' in again.stderr
  assert (tmp_path / 'checkpoints' / '4.damaged').is_dir()
  assert _steps(tmp_path) == [1, 2, 3, 4, 5]


def test_resume_refuses_a_changed_seed_or_global_batch_unless_allowed(tiny_config):
  saved = {'seed': 0, 'global_batch': 16}
  config = tiny_config
  train._check_resume_settings(saved, config)  # same settings
  train._check_resume_settings({}, config)  # a checkpoint written before they were recorded
  config.seed = 3
  with pytest.raises(ConfigError, match=r"config.seed: 3 differs from the checkpoint's 0.*"
                                        r"config.resume_allow_changes=True"):
    train._check_resume_settings(saved, config)
  config.seed, config.data.global_batch = 0, 32
  with pytest.raises(ConfigError, match="config.data.global_batch: 32 differs"):
    train._check_resume_settings(saved, config)
  config.resume_allow_changes = True
  train._check_resume_settings(saved, config)


@pytest.fixture
def tiny_config():
  from vlalign import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_config_module(os.path.join(ROOT, 'configs', 'demo.py')).get_config('tiny')


def test_workdir_lock_refuses_a_live_owner_and_takes_over_a_dead_ones(tmp_path, caplog):
  caplog.set_level('WARNING')
  path = workdir_lock.acquire(str(tmp_path))
  with pytest.raises(workdir_lock.WorkdirLockedError, match=f'pid {os.getpid()} on'):
    workdir_lock.acquire(str(tmp_path))
  workdir_lock.release(path)
  assert not os.path.exists(path)
  dead = subprocess.Popen(['true'])
  dead.wait()
  with open(path, 'w') as f:
    json.dump({'host': socket.gethostname(), 'pid': dead.pid, 'started': 0}, f)
  assert workdir_lock.acquire(str(tmp_path)) == path
  assert f'took over the stale lock {path} of pid {dead.pid} on' in caplog.text
  assert 'no longer running' in caplog.text
  workdir_lock.release(path)
  with open(path, 'w') as f:  # another host, touched recently: it may be alive, so refused
    json.dump({'host': 'elsewhere', 'pid': 1, 'started': 0}, f)
  with pytest.raises(workdir_lock.WorkdirLockedError, match='delete the lock file'):
    workdir_lock.acquire(str(tmp_path))
  old = time.time() - workdir_lock.STALE_S - 5  # not touched for longer: its run is gone
  os.utime(path, (old, old))
  assert workdir_lock.acquire(str(tmp_path)) == path
  assert 'of pid 1 on elsewhere (not touched for' in caplog.text
  workdir_lock.release(path)


def test_second_run_on_a_workdir_stops_with_one_line(tmp_path, cache):
  """A live run's lock (this test process stands in for it): main exits 1 with one line."""
  with open(tmp_path / workdir_lock.LOCK_NAME, 'w') as f:
    json.dump({'host': socket.gethostname(), 'pid': os.getpid(), 'started': time.time()}, f)
  proc = _main(tmp_path, cache)
  assert proc.returncode == 1
  assert _last_line(proc.stderr).startswith(
      f'vlalign: workdir {tmp_path} is in use by another run (pid {os.getpid()}')
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_sigterm_during_setup_exits_0_with_one_line(tmp_path, cache):
  proc = _main(tmp_path, cache, popen=True)
  try:
    for line in proc.stderr:
      if 'workdir' in line and 'config ' in line:  # main's last line before train starts
        proc.send_signal(signal.SIGTERM)
        break
    _, rest = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0, rest[-3000:]
  assert _last_line(rest).startswith('vlalign: SIGTERM received during setup, before any '
                                     'training step: nothing to save')
  assert 'Traceback' not in rest
  assert not os.path.exists(tmp_path / workdir_lock.LOCK_NAME)  # released on the way out


@pytest.mark.parametrize('vocab,match', [
    ('missing.txt', 'does not exist'), ('empty.txt', 'is empty'),
    ('dup.txt', "duplicate entries: ['a']")])
def test_bad_vocabulary_file_is_one_line_naming_the_field(tmp_path, vocab, match):
  (tmp_path / 'empty.txt').write_text('')
  (tmp_path / 'dup.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\na\n')
  config = config_lib.base_config()
  with pytest.raises(SystemExit,
                     match=f'^vlalign: config.data.tokenizer.vocab_file: .*{re.escape(match)}'):
    with errors.one_line('vlalign'):
      train.make_tokenizer(config, str(tmp_path / vocab))


@pytest.mark.parametrize('name,match', [
    ('no_such_dataset_xyz', "TFDS has no dataset named 'no_such_dataset_xyz'"),
    ('mnist', "TFDS dataset 'mnist' is not prepared in")])
def test_missing_tfds_dataset_is_one_line(tmp_path, name, match):
  with pytest.raises(SystemExit, match=f"^vlalign: config.data.sources: 'tfds:{name}:train': "
                                       f'{match}'):
    with errors.one_line('vlalign'):
      errors.check_tfds(name, str(tmp_path), f"config.data.sources: 'tfds:{name}:train'")


def test_one_line_keeps_tracebacks_for_bugs():
  with pytest.raises(KeyError):
    with errors.one_line('vlalign'):
      raise KeyError('a bug, not bad input')


def test_run_fingerprint_tells_checkpoints_apart():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vlalign.tools import embed, search  # pylint: disable=g-import-not-at-top
  params = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': {'c': np.ones(2)}}
  same = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': {'c': np.ones(2)}}
  assert embed.run_fingerprint(params) == embed.run_fingerprint(same)
  for changed in ({**params, 'a': params['a'] + 1e-6},
                  {**params, 'a': params['a'].reshape(3, 2)},
                  {'x': params['a'], 'b': params['b']}):
    assert embed.run_fingerprint(changed) != embed.run_fingerprint(params)
  meta = {'fingerprint': embed.run_fingerprint(params), 'workdir': '/w', 'step': 6}
  search.check_same_run('idx', meta, same, '/w')
  with pytest.raises(search.IndexMismatchError, match='exported from another run'):
    search.check_same_run('idx', meta, {**params, 'a': params['a'] * 2}, '/w')
  with pytest.raises(search.IndexMismatchError, match='records no run fingerprint'):
    search.check_same_run('idx', {'step': 6}, params, '/w')
