"""Tokenizer throughput and its share of the input pipeline, per data.tokenizer kind.

python benchmarks/tokenizer_throughput.py [--examples=3000] [--image_size=224] [--batch=64]
    [--rounds=3] [--out=benchmarks/results/tokenizer_throughput.jsonl]

On the web-like shards of benchmarks/input_pipeline.py (generated once into --data_dir):
  alone/<kind>  captions/s of the tokenizer by itself: tf.data over the shards' captions,
                batched, tokenize mapped with AUTOTUNE (wordpiece: tf-text FastBertTokenizer
                with the shards' learned vocab; bpe: CLIP's merges through Hugging Face
                tokenizers in tf.numpy_function, ftfy cleaning included; sentencepiece: tf-text
                with the test fixture's model)
  full/<kind>   examples/s of vlalign's TrainIterator (decode, crop, tokenize, batch) with that
                tokenizer; rounds interleave the kinds so machine noise hits them alike
A tokenizer is no bottleneck while alone/<kind> is far above full/<kind> and full/<kind> stays
near full/wordpiece.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import input_pipeline  # pylint: disable=wrong-import-position
from vlalign import config_lib  # pylint: disable=wrong-import-position
from vlalign.data import pipeline, sources, tokenizers  # pylint: disable=wrong-import-position

SPM = os.path.join(ROOT, 'tests', 'fixtures', 'tokenizer_spm.model')
KINDS = {'wordpiece': None, 'bpe': '', 'sentencepiece': SPM}


def captions(pattern: str) -> list[bytes]:
  spec = {'text': tf.io.FixedLenFeature([], tf.string)}
  ds = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern)))
  return [t.numpy() for t in ds.map(lambda r: tf.io.parse_single_example(r, spec)['text'])]


def alone(tok, texts: list[bytes], batch: int, n_batches: int) -> float:
  """Captions/s of tok.tokenize in tf.data (batched, parallel map, prefetch)."""
  ds = tf.data.Dataset.from_tensor_slices(np.array(texts, dtype=object)).repeat()
  ds = ds.batch(batch).map(tok.tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
  return input_pipeline.rate(iter(ds.as_numpy_iterator()), n_batches, batch)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--examples', type=int, default=3000)
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--resize_size', type=int, default=256)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--batches', type=int, default=30)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--max_len', type=int, default=64)
  p.add_argument('--data_dir', default='/tmp/vlalign_bench_input')
  p.add_argument('--out', default='benchmarks/results/tokenizer_throughput.jsonl')
  args = p.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  pattern, vocab = input_pipeline.make_data(args.data_dir, args.examples)
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size = args.batch, args.image_size, args.resize_size
  d.max_len, d.shuffle_buffer, d.flip = args.max_len, 1024, True
  d.sources = (f'tfrecord:{pattern}',)
  src, texts = sources.resolve(d.sources[0], d), captions(pattern)
  toks = {}
  for kind, path in KINDS.items():
    d.tokenizer.kind = kind
    toks[kind] = tokenizers.make_tokenizer(d, vocab if path is None else path)
  results = {f'{w}/{k}': [] for w in ('alone', 'full') for k in KINDS}
  for r in range(args.rounds):
    for kind, tok in toks.items():
      results[f'alone/{kind}'].append(alone(tok, texts, 256, args.batches))
      it = pipeline.TrainIterator(d, [src], tok, seed=r)
      results[f'full/{kind}'].append(input_pipeline.rate(it, args.batches, args.batch))
      it.close()
    print(f'round {r + 1}/{args.rounds}: ' + ', '.join(f'{k} {v[-1]:.0f}/s'
                                                        for k, v in results.items()), flush=True)
  row = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
         'machine': f'{platform.processor() or "cpu"}, {os.cpu_count()} cores',
         'image_size': args.image_size, 'batch': args.batch, 'max_len': args.max_len,
         'load_average_1min': round(os.getloadavg()[0], 2),
         **{k: round(float(np.median(v)), 1) for k, v in results.items()}, 'rounds': results}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'a', encoding='utf-8') as f:
    f.write(json.dumps(row) + '\n')
  print(json.dumps({k: v for k, v in row.items() if k != 'rounds'}))


if __name__ == '__main__':
  main()
