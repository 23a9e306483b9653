"""Input pipeline throughput per core: the full training pipeline against a bare tf.data
decode + random crop loop over the same TFRecord shards, on the same pinned cores, in one run,
for two kinds of JPEGs (ratios are what carry between machines).

python benchmarks/input_pipeline.py [--cores=1] [--rounds=3] [--kinds=256,web]
    [--out=benchmarks/results/input_pipeline.jsonl]

The process pins itself to --cores CPUs (os.sched_setaffinity before TensorFlow starts, the same
as `taskset`; TensorFlow sizes its thread pools from that mask), so examples/s divided by
--cores is a per-core rate; examples per CPU-second (process CPU time, all threads) is also
given: it is what a fully used core does and moves less with other load on the machine.
Kinds (generated once under --data_dir with smooth multi-scale random images + mild noise,
tf.io.encode_jpeg quality 90, 5-20-word captions):
  256  shorter side 256, longer side 256-384 (img2dataset's keep_ratio output at 256)
  web  shorter side 1000-2000, longer side up to 1.5x that (web-sized originals)
Pipelines (224-px crops, resize target 256, batch --batch; web uses --web_batch):
  bare        TFRecordDataset (parallel interleave) -> parse -> decode_jpeg -> stateless
              random 224 crop -> batch: the least any pipeline does (web: no resize at all)
  bare_float  256 only: bare with the crop cast to float32 (the cost of float batches)
  bare_view   bare with vlalign's train_view of the bytes in place of decode + crop (windowed
              decode, DCT scaling, crop, flip, normalise to float32): full minus the reader,
              shuffle, skip counting and tokenization
  bare_view_uint8  256 only: bare_view with uint8 output (data.uint8_batches)
  bare_resize web only: bare with the antialiased resize of the whole image to a 256-px
              shorter side before the crop (what the pipeline did before crop-first decoding)
  full        vlalign's TrainIterator: native record reader (TFRecordDataset, parse + checks as
              TF ops), shuffle, skip counting, windowed decode (+ DCT scaling for web), random
              crop + flip, normalise, per-batch WordPiece tokenization (max_len 64), batch
  full_uint8  full with data.uint8_batches=True: the crops batched as uint8, normalised in the
              train step on the accelerator (not counted here: it is not host work)
  full_python 256 only: full with data.tfrecord_reader='python' (records parsed and checked
              in Python, the reader before issue 17)
  full_exact  web only: full with data.dct_scaling=False
  reader      256 only: the record reader and checks alone (records/s, nothing decoded);
              reader_python the same with the Python reader
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np


def pin_cores(argv: list[str]) -> None:
  """Pins this process to the first --cores allowed CPUs (as `taskset` would); must run before
  TensorFlow starts its threads, which inherit the mask (and size their pools from it)."""
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument('--cores', type=int, default=1)
  n = parser.parse_known_args(argv)[0].cores
  allowed = sorted(os.sched_getaffinity(0))
  if not 1 <= n <= len(allowed):
    sys.exit(f'--cores={n}: {len(allowed)} CPUs are available')
  os.sched_setaffinity(0, allowed[:n])


if __name__ == '__main__':
  pin_cores(sys.argv[1:])

# pylint: disable=wrong-import-position
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vlalign import config_lib
from vlalign.data import filters, image_ops, pipeline, sources
from vlalign.data.text import WordpieceTokenizer
from vlalign.tools import build_vocab
# pylint: enable=wrong-import-position

WORDS = ('a the red blue green small large photo of dog cat car tree house on in with near old '
         'new bright dark city street beach mountain sunset people woman man child playing '
         'sitting standing white black yellow view from above close up').split()
KINDS = {'256': dict(short=(256, 257), n=1500, shards=8),
         'web': dict(short=(1000, 2001), n=120, shards=8)}


def photo(rng: np.random.Generator, h: int, w: int):
  """A random smooth image with structure at three scales and mild noise, uint8 [h, w, 3]."""
  x = tf.fill([h, w, 3], 128.0)
  for cells, amp in ((3, 50.0), (h // 48, 35.0), (h // 8, 15.0)):
    base = rng.normal(0, amp, (cells + 2, int(cells * w / h) + 2, 3)).astype(np.float32)
    x += tf.image.resize(base, [h, w], method='bicubic')
  x += rng.integers(-3, 4, (h, w, 3)).astype(np.float32)
  return tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8)


def make_data(data_dir: str, n: int | None = None, kind: str = '256',
              seed: int = 0) -> tuple[str, str]:
  """Writes n examples (default: the kind's) of a kind as shards once, and a vocabulary;
  returns (glob, vocab path)."""
  spec = KINDS[kind]
  n = n or spec['n']
  folder = os.path.join(data_dir, f'{kind}-{n}')
  pattern = os.path.join(folder, 'part-*.tfrecord')
  vocab = os.path.join(data_dir, 'vocab-2000.txt')
  os.makedirs(data_dir, exist_ok=True)
  if not os.path.exists(vocab):
    rng = np.random.default_rng(seed)
    texts = [' '.join(rng.choice(WORDS, rng.integers(5, 21))) for _ in range(2000)]
    build_vocab.write_vocab(build_vocab.learn_vocab(texts, 2000), vocab)
  if os.path.exists(os.path.join(folder, 'done')):
    return pattern, vocab
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  writers = [tf.io.TFRecordWriter(os.path.join(folder, f'part-{i:03d}.tfrecord'))
             for i in range(spec['shards'])]
  for i in range(n):
    short = int(rng.integers(*spec['short']))
    long_ = int(short * rng.uniform(1.0, 1.5))
    h, w = (short, long_) if rng.random() < 0.5 else (long_, short)
    image = tf.io.encode_jpeg(photo(rng, h, w), quality=90).numpy()
    text = ' '.join(rng.choice(WORDS, rng.integers(5, 21)))
    feats = {'image': image, 'text': text.encode(), 'id': f'{kind}/{i:07d}'.encode()}
    ex = tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in feats.items()}))
    writers[i % spec['shards']].write(ex.SerializeToString())
  for w in writers:
    w.close()
  open(os.path.join(folder, 'done'), 'w').close()
  return pattern, vocab


def bare(pattern: str, batch: int, view=None) -> tf.data.Dataset:
  """TFRecordDataset -> parse -> decode_jpeg -> random 224 crop -> batch; with `view`, that
  function of (encoded image, key) replaces decode + crop."""
  spec = {'image': tf.io.FixedLenFeature([], tf.string)}

  def prep(i, record):
    data, key = tf.io.parse_single_example(record, spec)['image'], tf.stack([i, i])
    if view is not None:
      return view(data, key)
    return tf.image.stateless_random_crop(tf.io.decode_jpeg(data, channels=3), [224, 224, 3],
                                          seed=key)

  files = tf.data.Dataset.list_files(pattern, shuffle=False)
  ds = files.interleave(tf.data.TFRecordDataset, cycle_length=8,
                        num_parallel_calls=tf.data.AUTOTUNE).repeat().enumerate()
  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch).prefetch(2)


def resize_then_crop(data, key):
  """The whole image resized (shorter side 256, antialiased), then a random 224 crop."""
  img = image_ops.resize_shorter(tf.io.decode_jpeg(data, channels=3), 256)
  return tf.image.stateless_random_crop(img, [224, 224, 3], seed=key)


def crop_to_float(data, key):
  """bare's decode + crop, then float32 pixels (what a model reads) instead of uint8."""
  img = tf.image.stateless_random_crop(tf.io.decode_jpeg(data, channels=3), [224, 224, 3],
                                       seed=key)
  return tf.cast(img, tf.float32)


def vlalign_view(data, key):
  """vlalign's training view of the bytes (windowed decode, DCT scaling, crop, flip, [-1, 1])."""
  return image_ops.train_view(data, key, resize=256, crop=224, random_crop=True, flip=True,
                              dct_scaling=True)


def vlalign_view_uint8(data, key):
  """vlalign_view as data.uint8_batches gives it (uint8 pixels, no normalisation)."""
  return image_ops.train_view(data, key, resize=256, crop=224, random_crop=True, flip=True,
                              dct_scaling=True, uint8=True)


def rate(iterator, n_batches: int, batch: int) -> float:
  """Examples per second over n_batches (after 4 to warm up)."""
  return rates(iterator, n_batches, batch)[0]


def rates(iterator, n_batches: int, batch: int) -> tuple[float, float]:
  """(examples per second, examples per CPU-second of this process) over n_batches."""
  for _ in range(4):  # warm up: threads, autotune, the shuffle buffer
    next(iterator)
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(n_batches):
    next(iterator)
  n = n_batches * batch
  return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def data_config(pattern: str, batch: int, shuffle: int, dct: bool = True,
                reader: str = 'native'):
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size = batch, 224, 256
  d.max_len, d.shuffle_buffer, d.flip, d.dct_scaling = 64, shuffle, True, dct
  d.tfrecord_reader = reader
  d.sources = (f'tfrecord:{pattern}',)
  return d


def cpu_model() -> str:
  """lscpu's model name (or the platform's processor string)."""
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
  except OSError:
    out = ''
  names = [l.split(':', 1)[1].strip() for l in out.splitlines() if l.startswith('Model name')]
  return names[0] if names else platform.processor() or 'cpu'


def run_round(args, kind: str, pattern: str, tok, r: int) -> dict[str, tuple]:
  """One round of every pipeline of a kind, back to back: {name: (examples/s, per CPU-s)}."""
  web = kind == 'web'
  batch, n = (args.web_batch, args.web_batches) if web else (args.batch, args.batches)
  bares = {'bare': None, 'bare_view': vlalign_view}
  if not web:
    bares['bare_float'] = crop_to_float
    bares['bare_view_uint8'] = vlalign_view_uint8
  if web:
    bares['bare_resize'] = resize_then_crop
  out = {name: rates(iter(bare(pattern, batch, view).as_numpy_iterator()), n, batch)
         for name, view in bares.items()}
  # (name, dct_scaling, reader, uint8_batches)
  fulls = ((('full', True, 'native', False), ('full_uint8', True, 'native', True),
            ('full_exact', False, 'native', False)) if web else
           (('full', True, 'native', False), ('full_uint8', True, 'native', True),
            ('full_python', True, 'python', False)))
  for name, dct, reader, uint8 in fulls:
    d = data_config(pattern, batch, 16 if web else 1024, dct, reader)
    d.uint8_batches = uint8
    it = pipeline.TrainIterator(d, [sources.resolve(d.sources[0], d)], tok, seed=r)
    out[name] = rates(it, n, batch)
    it.close()
  for name, reader in () if web else (('reader', 'native'), ('reader_python', 'python')):
    d = data_config(pattern, batch, 1024, reader=reader)
    stream = pipeline.record_stream(sources.resolve(d.sources[0], d), d, filters.Checks(),
                                    seed=r).batch(batch)
    out[name] = rates(iter(stream.as_numpy_iterator()), n * 4, batch)
  return out


def summarise(kind: str, rounds: list[dict], cores: int) -> dict:
  """Medians per pipeline (examples/s, per core, per CPU-second) and full / bare ratios."""
  row = {'kind': kind}
  for name in rounds[0]:
    eps = [x[name][0] for x in rounds]
    cpu = [x[name][1] for x in rounds]
    row[name] = {'examples_per_s': round(float(np.median(eps)), 1),
                 'per_core': round(float(np.median(eps)) / cores, 1),
                 'per_cpu_second': round(float(np.median(cpu)), 1),
                 'rounds': [round(e, 1) for e in eps]}
  for full in ('full', 'full_uint8'):
    for base in ('bare', 'bare_view', 'bare_resize', 'full_python'):
      if base in rounds[0] and full in rounds[0]:
        row[f'{full}_over_{base}'] = round(float(np.median(
            [x[full][0] / x[base][0] for x in rounds])), 3)
        row[f'{full}_over_{base}_cpu'] = round(float(np.median(
            [x[full][1] / x[base][1] for x in rounds])), 3)
  return row


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--cores', type=int, default=1, help='CPUs this process is pinned to')
  p.add_argument('--kinds', default='256,web')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--batches', type=int, default=20)
  p.add_argument('--web_batch', type=int, default=16)
  p.add_argument('--web_batches', type=int, default=4)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--data_dir', default='/tmp/vlalign_bench_input')
  p.add_argument('--out', default='benchmarks/results/input_pipeline.jsonl')
  args = p.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  kinds = args.kinds.split(',')
  data = {k: make_data(args.data_dir, kind=k) for k in kinds}
  tok = WordpieceTokenizer(data[kinds[0]][1], 64)
  results = {k: [] for k in kinds}
  for r in range(args.rounds):  # interleaved rounds: machine noise hits all pipelines alike
    for k in kinds:
      results[k].append(run_round(args, k, data[k][0], tok, r))
      print(f'round {r + 1}/{args.rounds} {k}: ' + ', '.join(
          f'{name} {v[0]:.1f}/s ({v[1]:.1f}/CPU-s)' for name, v in results[k][-1].items()),
            flush=True)
  head = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'cpu': cpu_model(),
          'cores': len(os.sched_getaffinity(0)), 'machine_cpus': os.cpu_count(),
          'load_average_1min': round(os.getloadavg()[0], 2),
          'command': 'python ' + ' '.join(sys.argv)}
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  with open(args.out, 'a', encoding='utf-8') as f:
    for k in kinds:
      row = {**head, **summarise(k, results[k], head['cores'])}
      f.write(json.dumps(row) + '\n')
      print(json.dumps(row))


if __name__ == '__main__':
  main()
