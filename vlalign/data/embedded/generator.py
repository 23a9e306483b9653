"""Writes the embedded dataset once: TFRecord shards per source and split, plus a vocabulary.

Layout under `<cache_dir>/<hash of the arguments>/`:
  train/studio-00000-of-00008.tfrecord ...   train/sketch-*.tfrecord
  heldout/heldout-00000-of-00002.tfrecord ...
  vocab.txt, manifest.json (written last: its presence marks a complete dataset)
"""

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from vlalign.data.embedded import captions, scenes

_PROMPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'prompts.json')
FORMAT_VERSION = 6
# Fraction of held-out scenes built around a (colour, shape) pair never seen in training.
NOVEL_FRACTION = 0.3


def feature_spec() -> dict:
  """tf.io parsing spec of the shards' tf.train.Example features."""
  ints = tf.io.VarLenFeature(tf.int64)
  return {'image': tf.io.FixedLenFeature([], tf.string),
          'text': tf.io.FixedLenFeature([], tf.string),
          'id': tf.io.FixedLenFeature([], tf.string),
          'source': tf.io.FixedLenFeature([], tf.string),
          'num_objects': tf.io.FixedLenFeature([], tf.int64),
          'colors': ints, 'shapes': ints, 'sizes': ints, 'positions': ints,
          'noisy': tf.io.FixedLenFeature([], tf.int64),
          'noise_kind': tf.io.FixedLenFeature([], tf.string),
          'novel': tf.io.FixedLenFeature([], tf.int64)}


def load_prompts() -> dict:
  """Zero-shot class names and prompt templates per attribute (colour, shape, size)."""
  with open(_PROMPTS) as f:
    return json.load(f)


def _bytes(v: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _ints(v) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))


def make_example(rng: np.random.Generator, *, style: str, uid: str, heldout: bool,
                 noise_fraction: float, num_objects: int) -> tf.train.Example:
  """One rendered scene with its caption and attributes as a tf.train.Example."""
  novel = heldout and rng.random() < NOVEL_FRACTION
  objs = scenes.sample_scene(rng, num_objects=num_objects, heldout=heldout, novel=novel)
  img = scenes.render(objs, style, rng)
  buf = io.BytesIO()
  img.save(buf, format='PNG')
  kind = ''
  if not heldout and rng.random() < noise_fraction:
    kind = captions.NOISE_KINDS[int(rng.integers(len(captions.NOISE_KINDS)))]
    text = captions.noisy_caption(objs, style, kind, rng)
  else:
    text = captions.clean_caption(objs, style, rng)
  feats = {'image': _bytes(buf.getvalue()), 'text': _bytes(text.encode()),
           'id': _bytes(uid.encode()), 'source': _bytes(style.encode()),
           'num_objects': _ints([len(objs)]), 'colors': _ints(o.color for o in objs),
           'shapes': _ints(o.shape for o in objs), 'sizes': _ints(o.size for o in objs),
           'positions': _ints(o.position for o in objs), 'noisy': _ints([int(bool(kind))]),
           'noise_kind': _bytes(kind.encode()), 'novel': _ints([int(novel)])}
  return tf.train.Example(features=tf.train.Features(feature=feats))


def _write_split(out_dir: str, name: str, style_of, n: int, *, seed: int, heldout: bool,
                 noise_fraction: float, num_shards: int) -> list[str]:
  """Writes n examples round-robin over num_shards shards; returns the captions."""
  os.makedirs(out_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  split = 'heldout' if heldout else 'train'
  paths = [os.path.join(out_dir, f'{name}-{i:05d}-of-{num_shards:05d}.tfrecord')
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  texts, t0 = [], time.time()
  # Scenes of 1, 2 and 3 objects; 40% of held-out scenes are single-object (zero-shot uses them).
  probs = (0.4, 0.3, 0.3) if heldout else (0.8, 0.15, 0.05)
  for i in range(n):
    k = int(rng.choice(3, p=probs)) + 1
    ex = make_example(rng, style=style_of(i), uid=f'{name}/{split}/{i:06d}', heldout=heldout,
                      noise_fraction=noise_fraction, num_objects=k)
    writers[i % num_shards].write(ex.SerializeToString())
    texts.append(ex.features.feature['text'].bytes_list.value[0].decode())
    if (i + 1) % 5000 == 0 or i + 1 == n:
      logging.info('embedded data: %s/%s %d/%d examples (%.1fs)', split, name, i + 1, n,
                   time.time() - t0)
  for w in writers:
    w.close()
  return texts


def _args_key(**kwargs) -> str:
  blob = json.dumps({'version': FORMAT_VERSION, **kwargs}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_dataset(cache_dir: str, *, seed: int = 0, train_sizes: dict | None = None,
                   heldout_size: int = 1200, noise_fraction: float = 0.25, num_shards: int = 8,
                   vocab_size: int = 1000) -> dict:
  """Generates the dataset into cache_dir once (atomically) and returns its paths."""
  from vlalign.tools import build_vocab  # pylint: disable=g-import-not-at-top
  train_sizes = dict(train_sizes or {'studio': 12000, 'sketch': 6000})
  for name in train_sizes:
    if name not in scenes.STYLES:
      raise ValueError(f'config.data.embedded.train_sizes: unknown source {name!r}; '
                       f'sources are {scenes.STYLES}')
  if not 0.0 <= noise_fraction <= 1.0:
    raise ValueError(f'config.data.embedded.noise_fraction={noise_fraction} not in [0, 1]')
  args = dict(seed=seed, train_sizes=train_sizes, heldout_size=heldout_size,
              noise_fraction=noise_fraction, num_shards=num_shards, vocab_size=vocab_size)
  final = os.path.join(cache_dir, _args_key(**args))
  manifest = os.path.join(final, 'manifest.json')
  if not os.path.exists(manifest):
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.partial-', dir=cache_dir)
    try:
      _generate(tmp, args, build_vocab)
      os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
      try:
        # Atomic, and refused when `final` is a non-empty folder: a process that finished
        # first keeps its copy (which others may be reading), this one drops its own.
        os.rename(tmp, final)
      except OSError:
        if not os.path.isfile(manifest):
          raise
        shutil.rmtree(tmp)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  return _paths(final, train_sizes)


def _generate(out: str, args: dict, build_vocab) -> None:
  t0 = time.time()
  logging.info('embedded data: generating into %s', out)
  texts = []
  for k, (name, n) in enumerate(sorted(args['train_sizes'].items())):
    texts += _write_split(os.path.join(out, 'train'), name, lambda i, s=name: s, n,
                          seed=args['seed'] * 1000 + k, heldout=False,
                          noise_fraction=args['noise_fraction'], num_shards=args['num_shards'])
  n_held = args['heldout_size']
  _write_split(os.path.join(out, 'heldout'), 'heldout', lambda i: 'studio', n_held,
               seed=args['seed'] * 1000 + 999, heldout=True, noise_fraction=0.0,
               num_shards=max(1, min(args['num_shards'], n_held // 500)))
  vocab = build_vocab.learn_vocab(texts, args['vocab_size'])
  build_vocab.write_vocab(vocab, os.path.join(out, 'vocab.txt'))
  with open(os.path.join(out, 'manifest.json'), 'w') as f:
    json.dump({**args, 'vocab_entries': len(vocab), 'format_version': FORMAT_VERSION}, f,
              indent=1, sort_keys=True)
  logging.info('embedded data: done in %.1fs (%d training captions, vocab %d)',
               time.time() - t0, len(texts), len(vocab))


def _paths(final: str, train_sizes: dict) -> dict:
  with open(os.path.join(final, 'manifest.json')) as f:
    manifest = json.load(f)
  return {'dir': final,
          'train': {n: os.path.join(final, 'train', f'{n}-*.tfrecord') for n in sorted(train_sizes)},
          'heldout': os.path.join(final, 'heldout', 'heldout-*.tfrecord'),
          'vocab': os.path.join(final, 'vocab.txt'),
          'sizes': {'train': manifest['train_sizes'], 'heldout': manifest['heldout_size']}}
