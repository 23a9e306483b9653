"""Resume cost: time to the first batch of a TrainIterator built from a data state at several
positions (records consumed), on generated TFRecord shards; and the TFRecord readers' rates.

nice -n 10 python benchmarks/resume_cost.py [--files=200] [--records=2500]
    [--positions=10000,100000,1000000,1019999] [--baseline_repo=PATH]
    [--baseline_positions=10000,100000,1000000] [--out=benchmarks/results/resume_cost.jsonl]

The shards hold --files x --records tf.train.Examples of ~300 bytes (a 16 x 16 JPEG from a pool
of 64, a short caption), written once into --data_dir. A position past one epoch lies in a
later epoch. The state is constructed (no training): with equal files, a position p is group
p // (cycle_length * records) and place p % (cycle_length * records) (1,019,999 is the last
place of its group: the most a resume skips).
  resume     TrainIterator(state at p) -> first batch, wall seconds (construction included)
  baseline   the same at the same positions with the code of --baseline_repo (a checkout from
             before groups, whose DataState holds only positions: it re-reads p records)
  readers    records/s of one group's files through the record stream (no decoding) with
             data.tfrecord_reader 'native' and 'python', and of the native path's pre-check
"""

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(data_dir: str, files: int, records: int) -> str:
  """Writes the shards once; returns their glob."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pattern = os.path.join(data_dir, 'shard-*.tfrecord')
  marker = os.path.join(data_dir, f'done-{files}x{records}')
  if os.path.exists(marker):
    return pattern
  os.makedirs(data_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  pool = []
  for _ in range(64):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(buf, 'JPEG', quality=50)
    pool.append(buf.getvalue())
  for f in range(files):
    with tf.io.TFRecordWriter(os.path.join(data_dir, f'shard-{f:04d}.tfrecord')) as w:
      for r in range(records):
        feats = {'image': pool[(f * 7 + r) % 64], 'text': f'a photo of thing {r % 97}'.encode(),
                 'id': f'{f}/{r}'.encode()}
        w.write(tf.train.Example(features=tf.train.Features(feature={
            k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
            for k, v in feats.items()})).SerializeToString())
  open(marker, 'w').close()
  return pattern


def _config(reader: str = 'native'):
  from vlalign import config_lib  # pylint: disable=g-import-not-at-top
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len = 256, 16, 16, 16
  if 'tfrecord_reader' in d:
    d.tfrecord_reader = reader
  return d


def _tokenizer(pattern: str):
  from vlalign.data.text import WordpieceTokenizer  # pylint: disable=g-import-not-at-top
  vocab = os.path.join(os.path.dirname(pattern), 'vocab.txt')
  if not os.path.exists(vocab):
    with open(vocab, 'w') as f:
      f.write('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a', 'photo', 'of',
                         'thing'] + [str(i) for i in range(97)]) + '\n')
  return WordpieceTokenizer(vocab, 16)


def first_batch_seconds(pattern: str, position: int, records: int) -> float:
  """Wall seconds from a data state at `position` to the first batch (in this process)."""
  from vlalign.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  d = _config()
  src = sources.Source('tfrecord:bench', 'tfrecord', files=pipeline.list_files(pattern))
  state = pipeline.DataState.initial(1)
  state.positions[0] = position
  if hasattr(state, 'in_group'):  # grouped streams: the cursor of that position
    per_group = d.cycle_length * records
    state.groups[0], state.in_group[0] = divmod(position, per_group)
  tok = _tokenizer(pattern)
  start = time.perf_counter()
  it = pipeline.TrainIterator(d, [src], tok, seed=0, state=state)
  next(it)
  seconds = time.perf_counter() - start
  it.close()
  return seconds


def reader_rates(pattern: str, files: int) -> dict[str, float]:
  """records/s of the record stream over `files` shards (one epoch, no decoding) per reader,
  and of the native path's pre-check over the same shards."""
  from vlalign.data import filters, pipeline, sources  # pylint: disable=g-import-not-at-top
  from vlalign.data.source_kinds import tfrecord  # pylint: disable=g-import-not-at-top
  paths = pipeline.list_files(pattern)[:files]
  src = sources.Source('tfrecord:bench', 'tfrecord', files=paths)
  out = {}
  for reader in ('python', 'native'):
    tfrecord._VERDICTS.clear()  # pylint: disable=protected-access
    d = _config(reader)
    d.shuffle_buffer = 1
    ds = pipeline.record_stream(src, d, filters.Checks(), seed=0, epochs=1).batch(1024)
    start = time.perf_counter()
    n = sum(len(b[0]) for b in ds.as_numpy_iterator())
    out[f'{reader}_records_per_s'] = n / (time.perf_counter() - start)
  tfrecord._VERDICTS.clear()  # pylint: disable=protected-access
  start = time.perf_counter()
  assert all(tfrecord.clean(p, 64 << 20) for p in paths)
  out['precheck_records_per_s'] = n / (time.perf_counter() - start)
  out['records'] = n
  return out


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument('--data_dir', default=os.path.expanduser('~/.cache/vlalign/resume_cost'))
  ap.add_argument('--files', type=int, default=200)
  ap.add_argument('--records', type=int, default=2500)
  ap.add_argument('--positions', default='10000,100000,1000000,1019999')
  ap.add_argument('--baseline_repo', default='')
  ap.add_argument('--baseline_positions', default='10000,100000,1000000')
  ap.add_argument('--one', type=int, default=-1, help=argparse.SUPPRESS)  # a child's position
  ap.add_argument('--out', default=os.path.join(ROOT, 'benchmarks/results/resume_cost.jsonl'))
  args = ap.parse_args()
  pattern = os.path.join(args.data_dir, 'shard-*.tfrecord')
  if args.one >= 0:  # a child process: one measurement, printed as JSON
    print(json.dumps({'seconds': first_batch_seconds(pattern, args.one, args.records)}))
    return
  make_data(args.data_dir, args.files, args.records)
  row = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
         'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count(),
         'files': args.files, 'records_per_file': args.records}
  # The first child of a run measured 130 s where later ones took 8-15 s at the same position
  # (twice, on this shared machine): a warm-up child runs first, kept apart as warmup_10000_s.
  for label, repo, positions in (('warmup', ROOT, '10000'), ('resume', ROOT, args.positions),
                                 ('baseline', args.baseline_repo, args.baseline_positions)):
    if not repo:
      continue
    for p in [int(x) for x in positions.split(',')]:
      env = dict(os.environ, PYTHONPATH=repo)
      proc = subprocess.run([sys.executable, os.path.abspath(__file__), f'--one={p}',
                             f'--data_dir={args.data_dir}', f'--records={args.records}'],
                            env=env, cwd=repo, capture_output=True, text=True, check=True)
      row[f'{label}_{p}_s'] = json.loads(proc.stdout.strip().splitlines()[-1])['seconds']
      print(label, p, row[f'{label}_{p}_s'], flush=True)
  sys.path.insert(0, ROOT)
  row.update(reader_rates(pattern, 8))
  print(json.dumps(row))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'a') as f:
    f.write(json.dumps(row) + '\n')


if __name__ == '__main__':
  main()
