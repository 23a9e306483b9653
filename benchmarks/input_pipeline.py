"""Input pipeline throughput: the full training pipeline against a bare decode+resize loop over
the same TFRecord shards on the same cores, in one run (ratios are what carry between machines).

python benchmarks/input_pipeline.py [--examples=3000] [--image_size=224] [--resize_size=256]
    [--rounds=3] [--out=benchmarks/results/input_pipeline.jsonl]

The shards hold web-like JPEGs (random sizes 240-500 px per side, smooth content, quality 90)
with captions of 5-20 words; they are generated once into --data_dir.
  bare       TFRecordDataset (parallel interleave) -> parse -> decode_jpeg -> the pipeline's
             resize (shorter side to --resize_size, antialiased) -> batch: the least any
             pipeline must do
  full       vlalign's TrainIterator: the Python record reader with the per-record checks,
             shuffle, skip counting, decode, random crop + flip, WordPiece tokenization, batch
  reader     the record reader and checks alone (records/s, no decoding): the pipeline's
             Python ceiling
"""

import argparse
import io
import json
import os
import platform
import sys
import time

import numpy as np
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vlalign import config_lib  # pylint: disable=wrong-import-position
from vlalign.data import filters, image_ops, pipeline, sources  # pylint: disable=wrong-import-position
from vlalign.data import tokenizers  # pylint: disable=wrong-import-position
from vlalign.tools import build_vocab  # pylint: disable=wrong-import-position

WORDS = ('a the red blue green small large photo of dog cat car tree house on in with near old '
         'new bright dark city street beach mountain sunset people woman man child playing '
         'sitting standing white black yellow view from above close up').split()


def make_data(data_dir: str, n: int, shards: int = 8, seed: int = 0) -> tuple[str, str]:
  """Writes the shards and a vocabulary once; returns (glob, vocab path)."""
  pattern = os.path.join(data_dir, 'web-*.tfrecord')
  vocab = os.path.join(data_dir, 'vocab.txt')
  marker = os.path.join(data_dir, f'done-{n}')
  if os.path.exists(marker):
    return pattern, vocab
  os.makedirs(data_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  writers = [tf.io.TFRecordWriter(os.path.join(data_dir, f'web-{i:03d}.tfrecord'))
             for i in range(shards)]
  texts = []
  for i in range(n):
    h, w = rng.integers(240, 501, 2)
    base = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((int(w), int(h)), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format='JPEG', quality=90)
    text = ' '.join(rng.choice(WORDS, rng.integers(5, 21)))
    texts.append(text)
    feats = {'image': buf.getvalue(), 'text': text.encode(), 'id': f'web/{i:07d}'.encode()}
    ex = tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in feats.items()}))
    writers[i % shards].write(ex.SerializeToString())
    if (i + 1) % 500 == 0:
      print(f'  generated {i + 1}/{n} images', flush=True)
  for w in writers:
    w.close()
  build_vocab.write_vocab(build_vocab.learn_vocab(texts, 2000), vocab)
  open(marker, 'w').close()
  return pattern, vocab


def bare(pattern: str, size: int, batch: int) -> tf.data.Dataset:
  spec = {'image': tf.io.FixedLenFeature([], tf.string)}

  def prep(record):
    img = tf.io.decode_jpeg(tf.io.parse_single_example(record, spec)['image'], channels=3)
    return image_ops.center_crop(image_ops.resize_shorter(img, size), size)

  files = tf.data.Dataset.list_files(pattern, shuffle=False)
  ds = files.interleave(tf.data.TFRecordDataset, cycle_length=8,
                        num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).repeat()
  return ds.batch(batch).prefetch(2)


def rate(iterator, n_batches: int, batch: int) -> float:
  next(iterator)  # warm up (threads, autotune)
  for _ in range(3):
    next(iterator)
  t0 = time.perf_counter()
  for _ in range(n_batches):
    next(iterator)
  return n_batches * batch / (time.perf_counter() - t0)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--examples', type=int, default=3000)
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--resize_size', type=int, default=256)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--batches', type=int, default=40)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--data_dir', default='/tmp/vlalign_bench_input')
  p.add_argument('--out', default='benchmarks/results/input_pipeline.jsonl')
  args = p.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  pattern, vocab = make_data(args.data_dir, args.examples)
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size = args.batch, args.image_size, args.resize_size
  d.max_len, d.shuffle_buffer, d.flip = 64, 1024, True
  d.sources = (f'tfrecord:{pattern}',)
  src = sources.resolve(d.sources[0], d)
  tok = tokenizers.make_tokenizer(d, vocab)
  results = {'bare': [], 'full': [], 'reader': []}
  for r in range(args.rounds):  # interleaved rounds: machine noise hits both alike
    results['bare'].append(rate(iter(bare(pattern, args.resize_size, args.batch)
                                      .as_numpy_iterator()), args.batches, args.batch))
    it = pipeline.TrainIterator(d, [src], tok, seed=r)
    results['full'].append(rate(it, args.batches, args.batch))
    it.close()
    stream = pipeline.record_stream(src, d, filters.Checks(), seed=r).batch(args.batch)
    results['reader'].append(rate(iter(stream.as_numpy_iterator()), args.batches * 4,
                                  args.batch))
    print(f'round {r + 1}/{args.rounds}: bare {results["bare"][-1]:.0f}/s, full '
          f'{results["full"][-1]:.0f}/s, reader {results["reader"][-1]:.0f} records/s',
          flush=True)
  med = {k: float(np.median(v)) for k, v in results.items()}
  ratios = [f / b for f, b in zip(results['full'], results['bare'])]  # adjacent in time
  row = {'date': time.strftime('%Y-%m-%d'), 'machine': f'{platform.processor() or "cpu"}, '
         f'{os.cpu_count()} cores', 'image_size': args.image_size,
         'resize_size': args.resize_size, 'batch': args.batch,
         'bare_examples_per_s': round(med['bare'], 1), 'full_examples_per_s': round(med['full'], 1),
         'reader_records_per_s': round(med['reader'], 1),
         'full_over_bare': round(float(np.median(ratios)), 3),
         'load_average_1min': round(os.getloadavg()[0], 2), 'rounds': results}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'a') as f:
    f.write(json.dumps(row) + '\n')
  print(json.dumps({k: v for k, v in row.items() if k != 'rounds'}))


if __name__ == '__main__':
  main()
