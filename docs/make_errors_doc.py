"""Regenerates docs/ERRORS.md: runs `python -m vlalign.main` on each bad input and records the
last line it prints (and its exit status); a few cases signal or kill the run during it.
Usage: python docs/make_errors_doc.py."""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = '--config=configs/demo.py:tiny'


def cases(tmp: str) -> list[tuple[str, list[str], dict, str | None]]:
  """(what, main flags, extra env, setup step) per bad input."""
  wd = lambda name: f'--workdir={tmp}/{name}'
  eight = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  return [
      ('unknown config key', [TINY, wd('a'), '--config.totl_steps=5'], {}, None),
      ('wrong type', [TINY, wd('b'), '--config.total_steps=abc'], {}, None),
      ('wrong type (float for an int)', [TINY, wd('b2'), '--config.data.global_batch=1.5'], {},
       None),
      ('value out of range', [TINY, wd('c'), '--config.optimizer.warmup_steps=50'], {}, None),
      ('unknown choice', [TINY, wd('d'), '--config.loss.name=triplet'], {}, None),
      ('config file that does not exist', ['--config=configs/none.py', wd('p1')], {}, None),
      ('unknown config variant', ['--config=configs/demo.py:tny', wd('p2')], {}, None),
      ('misspelt tower field', [TINY, wd('p3'), '--config.model.image.widht=8'], {}, None),
      ('unknown method', [TINY, wd('p4'), '--config.method.name=simclr'], {}, None),
      ('setting of a method not chosen', [TINY, wd('p5'), '--config.method.declip.bank_size=64'],
       {}, None),
      ('loss field the method ignores', ['--config=configs/brivl_effnet_bert.py:tiny', wd('p6'),
                                         '--config.loss.label_smoothing=0.2'], {}, None),
      ('global batch not divisible by the devices', [TINY, wd('e'),
                                                     '--config.data.global_batch=12'], eight, None),
      ('mesh that does not match the devices', [TINY, wd('f'), "--config.mesh={'data': 3}"],
       eight, None),
      ('batch axis missing from the mesh', [TINY, wd('g'), "--config.batch_axes=('model',)"], {},
       None),
      ('paper config without data', ['--config=configs/align_b7.py', wd('h')], {}, None),
      ('training files that do not exist', ['--config=configs/align_b7.py:runlocal', wd('i'),
                                            f"--config.data.sources=('tfrecord:{tmp}/none-*"
                                            f".tfrecord',)",
                                            f'--config.data.tokenizer.vocab_file={tmp}/vocab.txt'],
       {}, None),
      ('checkpoint of another model in the workdir', [TINY, wd('j'),
                                                      '--config.model.text.width=48'], {},
       'train_j'),
      ('newest two checkpoints unreadable', [TINY, wd('k')], {}, 'damage_k'),
      ('non-finite loss with nan_policy=stop', [TINY, wd('l'),
                                                "--config.debug.nan_loss_at_steps=(2,)"], {},
       None),
      ('several processes without a coordinator', [TINY, wd('m'), '--num_processes=2'], {},
       None),
      ('unknown tokenizer kind', [TINY, wd('tk1'), '--config.data.tokenizer.kind=unigram'], {},
       None),
      ('SentencePiece tokenizer without its model', [TINY, wd('tk2'),
                                                     '--config.data.tokenizer.kind=sentencepiece'],
       {}, None),
      ('special token name not in the vocabulary', [TINY, wd('tk3'),
                                                    '--config.data.tokenizer.mask=<mask>'], {},
       None),
      ('a source with no usable record (a typo in data.image_key)',
       [TINY, wd('q'), '--config.data.image_key=imag', '--config.data.max_wait_seconds=5'], {},
       None),
      ('tf.data service address that is not host:port',
       [TINY, wd('ds2'), '--config.data.service_address=nohost'], {}, None),
      ('a Python reader sent to tf.data service',
       [TINY, wd('ds1'), '--config.data.service_address=localhost:1'], {}, None),
      *_range_cases(wd),
      ('vocabulary file that does not exist', [TINY, wd('v1'),
                                               f'--config.data.vocab_file={tmp}/none.txt'], {},
       None),
      ('empty vocabulary file', [TINY, wd('v2'), f'--config.data.vocab_file={tmp}/empty.txt'],
       {}, 'vocab_files'),
      ('vocabulary file with a duplicated token', [TINY, wd('v3'),
                                                   f'--config.data.vocab_file={tmp}/dup.txt'],
       {}, 'vocab_files'),
      ('TFDS dataset that does not exist', [TINY, wd('t1'),
                                            "--config.data.sources=('tfds:no_such_ds:train',)"],
       {}, None),
      ('TFDS dataset not prepared in tfds_data_dir', [
          TINY, wd('t2'), "--config.data.sources=('tfds:mnist:train',)",
          f'--config.data.tfds_data_dir={tmp}/tfds'], {}, None),
      ('second run on a workdir in use', [TINY, wd('lock')], {}, 'live_lock'),
      ('resume with a changed seed', [TINY, wd('j'), '--config.seed=1'], {}, None),
      ('newest checkpoint\'s data item lacks keys (falls back, exit 0)',
       [TINY, wd('n'), '--config.total_steps=5'], {}, 'data_keys_n'),
      ('SIGTERM during setup (exit 0)', [TINY, wd('s')], {}, 'sigterm_setup'),
      ('2 processes, one SIGKILLed: the other (peer_timeout_s=20)',
       [TINY, wd('pod'), '--config.total_steps=400', '--config.peer_timeout_s=20',
        '--config.checkpoint_every=1000', '--config.debug.record_example_ids=True'], {},
       'pod_kill'),
  ]


def _range_cases(wd) -> list[tuple[str, list[str], dict, None]]:
  """Config fields out of range (config_lib.validate checks every ranged field)."""
  return [(f'{flag.split("=")[0]} out of range', [TINY, wd(f'r{i}'), f'--config.{flag}'], {},
           None) for i, flag in enumerate((
               'log_every=0', 'checkpoint_every=0', 'keep_checkpoints=-1', 'data.eval_batch=0',
               'model.embed_dim=0', 'data.image_size=-48', 'model.image.num_heads=3',
               'model.image.patch=0', 'optimizer.eps=0.0'))]


def _message(code: int, stderr: str) -> tuple[int, str]:
  lines = [l for l in stderr.strip().splitlines() if l.strip()]
  for line in lines:  # a fallback that goes on: its warning
    if 'does not read' in line:
      return code, line.split('] ', 1)[-1]
  # The message: vlalign's own line (and its continuation lines), else absl's flag error.
  for i, line in enumerate(lines):
    if line.startswith('vlalign: '):
      return code, ' / '.join(l.strip() for l in lines[i:i + 4])
  flag_errors = [l for l in lines if 'Flags parsing error' in l or 'Error' in l]
  return code, (flag_errors or lines or [''])[-1]


def _env(cache, env_extra) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu', VLALIGN_DATA_DIR=cache, **env_extra)


def run(args, env_extra, cache):
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', *args], cwd=ROOT,
                        env=_env(cache, env_extra), capture_output=True, text=True, timeout=600)
  return _message(proc.returncode, proc.stderr)


def run_sigterm_in_setup(args, cache):
  """SIGTERM right after main's 'config ..., workdir ...' line (training setup follows)."""
  proc = subprocess.Popen([sys.executable, '-m', 'vlalign.main', *args], cwd=ROOT,
                          env=_env(cache, {}), stderr=subprocess.PIPE, text=True)
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if 'config ' in line and 'workdir' in line:
      proc.send_signal(signal.SIGTERM)
      break
  _, rest = proc.communicate(timeout=300)
  return _message(proc.returncode, ''.join(seen) + rest)


def run_pod_kill(args, cache, tmp):
  """Two processes; process 1 SIGKILLed after process 0 started step 3: process 0's line."""
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
  logs = [open(f'{tmp}/pod{i}.log', 'w+') for i in range(2)]
  procs = [subprocess.Popen([sys.executable, '-m', 'vlalign.main', f'--coordinator=127.0.0.1:'
                             f'{port}', '--num_processes=2', f'--process_id={i}', *args],
                            cwd=ROOT, env=_env(cache, {}), stderr=logs[i]) for i in range(2)]
  ids = f'{tmp}/pod/example_ids/process_0.jsonl'
  while not (os.path.exists(ids) and sum(1 for _ in open(ids)) >= 3):
    if procs[0].poll() is not None or procs[1].poll() is not None:
      break  # it ended early: its own message is recorded
    time.sleep(0.5)
  procs[1].kill()
  t0 = time.time()
  code = procs[0].wait(timeout=600)
  logs[0].seek(0)
  code, line = _message(code, logs[0].read())
  return code, f'{line} (after {time.time() - t0:.0f} s)'


def setup(step: str, tmp: str, cache: str) -> None:
  """Prepares the files or workdir a case needs."""
  if step == 'vocab_files':
    with open(f'{tmp}/empty.txt', 'w') as f:
      f.write('')
    with open(f'{tmp}/dup.txt', 'w') as f:
      f.write('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\na\n')
  if step == 'live_lock':  # this generator's own pid stands for a live run
    os.makedirs(f'{tmp}/lock', exist_ok=True)
    with open(f'{tmp}/lock/run.lock', 'w') as f:
      json.dump({'host': socket.gethostname(), 'pid': os.getpid(), 'started': time.time()}, f)
  if step == 'data_keys_n':
    assert run([TINY, f'--workdir={tmp}/n', '--config.total_steps=5',
                '--config.stop_at_step=4'], {}, cache)[0] == 0
    data = f'{tmp}/n/checkpoints/4/data'
    for name in [n for n in os.listdir(data) if '.' not in n]:  # orbax's JSON item: 'metadata'
      with open(os.path.join(data, name)) as f:
        item = json.load(f)
      item.pop('hosts', None)
      with open(os.path.join(data, name), 'w') as f:
        json.dump(item, f)
  if step == 'train_j':
    assert run([TINY, f'--workdir={tmp}/j'], {}, cache)[0] == 0
  if step == 'damage_k':
    assert run([TINY, f'--workdir={tmp}/k', '--config.checkpoint_every=2'], {}, cache)[0] == 0
    for d in os.listdir(f'{tmp}/k/checkpoints'):
      for root, _, files in os.walk(f'{tmp}/k/checkpoints/{d}/state'):
        for f in files:
          open(os.path.join(root, f), 'w').close()


def main() -> None:
  tmp = tempfile.mkdtemp(prefix='vlalign_errors_')
  cache = os.path.join(tmp, 'cache')
  rows = []
  try:
    for what, args, env, step in cases(tmp):
      if step:
        setup(step, tmp, cache)
      if step == 'sigterm_setup':
        code, line = run_sigterm_in_setup(args, cache)
      elif step == 'pod_kill':
        code, line = run_pod_kill(args, cache, tmp)
      else:
        code, line = run(args, env, cache)
      print(f'{what}: exit {code}: {line}', file=sys.stderr, flush=True)
      shown = ' '.join(a.replace(tmp, '$TMP') for a in args)
      rows.append(f'| {what} | `{shown}` | {code} | `{line.replace(tmp, "$TMP")}` |')
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  with open(os.path.join(ROOT, 'docs', 'ERRORS.md'), 'w') as f:
    f.write('# Bad inputs and what vlalign says\n\n'
            f'Generated by `python docs/make_errors_doc.py` on {datetime.date.today()} (this '
            'machine, CPU). Each row ran `python -m vlalign.main` with the flags shown and '
            'records its exit status and the message it printed (vlalign\'s own line, or absl\'s flag '
            'error). Config errors stop before TensorFlow, devices or the workdir are touched. Not '
            'listed yet: a negative-queue size that is not a multiple of the batch (the queues '
            'arrive with the BriVL recipe, issue 5).\n\n'
            '| bad input | flags | exit | message |\n|---|---|---|---|\n' + '\n'.join(rows) + '\n')


if __name__ == '__main__':
  main()
