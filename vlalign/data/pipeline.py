"""Per-host tf.data input: list files -> shard by process -> interleave -> shuffle -> parse ->
decode + augment -> tokenize -> batch (this host's share of the global batch) -> prefetch.

Determinism and exact resume: the record stream is a deterministic function of the seed
(seeded file and record shuffles, deterministic interleave); each record carries its index
in that stream and its augmentation is keyed on (seed, index). A run that consumed records
[0, n) resumes by skipping n raw records, which costs reading, not decoding, them.
"""

import glob as globlib
from typing import Iterator

import numpy as np
import tensorflow as tf

from vlalign.data import image_ops, views
from vlalign.data.text import WordpieceTokenizer

_FEATURES = {'image': tf.io.FixedLenFeature([], tf.string),
             'text': tf.io.FixedLenFeature([], tf.string),
             'id': tf.io.FixedLenFeature([], tf.string, default_value=b'')}


def list_files(pattern: str) -> list[str]:
  """Sorted shard paths matching a glob; error naming the pattern if there are none."""
  files = sorted(tf.io.gfile.glob(pattern)) if '://' in pattern else sorted(globlib.glob(pattern))
  if not files:
    raise FileNotFoundError(f'no files match {pattern!r}')
  return files


def host_files(files: list[str], process_index: int, process_count: int) -> tuple[list[str], bool]:
  """This host's files; returns (files, shard_examples) where shard_examples means every host
  reads all files and keeps every process_count-th record (too few files to split)."""
  if len(files) >= process_count:
    return files[process_index::process_count], False
  return files, True


def record_stream(files: list[str], *, seed: int, shuffle_buffer: int, process_index: int = 0,
                  process_count: int = 1, host_split: str = 'files', global_batch: int = 0,
                  start_index: int = 0) -> tf.data.Dataset:
  """Endless deterministic stream of (index, serialized record) for this host, from raw record
  `start_index` on.

  host_split 'files': each host reads its own files (or every process_count-th record when
  there are fewer files than hosts); indices count this host's stream, and batches depend on
  the number of processes. 'batch': every host reads the one global stream a single process
  would read and keeps its contiguous slice of each global batch of `global_batch` records
  (only those are decoded later); indices are global, so batches and augmentations are the
  same for any number of processes, at the cost of every host reading every record's bytes.
  """
  if host_split not in ('files', 'batch'):
    raise ValueError(f'config.data.host_split: {host_split!r} is not one of [\'batch\', \'files\']')
  split = host_split == 'files' and process_count > 1
  mine, shard_examples = host_files(files, process_index, process_count) if split else (
      files, False)
  read = lambda d: d.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(mine)),
                                block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
  ds = tf.data.Dataset.from_tensor_slices(mine)
  if shard_examples:
    # A fixed file order, so every epoch gives each host the same records.
    ds = read(ds).shard(process_count, process_index).repeat()
  else:
    ds = read(ds.shuffle(len(mine), seed=seed, reshuffle_each_iteration=True).repeat())
  if shuffle_buffer > 1:
    ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
  ds = ds.enumerate()
  if start_index:
    ds = ds.skip(start_index)
  if host_split == 'batch' and process_count > 1:
    if not global_batch or global_batch % process_count:
      raise ValueError(f'config.data.global_batch={global_batch} must be a positive multiple '
                       f'of the {process_count} processes')
    per_host = global_batch // process_count
    ds = ds.filter(lambda i, _: (i // per_host) % process_count == process_index)
  return ds


def _train_parse(cfg, tokenizer: WordpieceTokenizer, seed: int):
  def parse(index, record):
    ex = tf.io.parse_single_example(record, _FEATURES)
    key = tf.stack([tf.cast(seed, tf.int64), index])
    img = image_ops.train_view(image_ops.decode(ex['image']), key, resize=cfg.resize_size,
                               crop=cfg.image_size, random_crop=cfg.random_crop, flip=cfg.flip)
    img.set_shape([cfg.image_size, cfg.image_size, 3])
    out = {'image': img, 'tokens': tokenizer.tokenize(ex['text']), 'index': index}
    # --- Extra views for a method (config.data.views; issue 5): image2, tokens_mlm + mlm_labels,
    # tokens_eda, keyed like the first view. See data/views.py.
    if views.wanted(cfg.get('views')):
      out.update(views.extra_views(cfg.views, image_ops.decode(ex['image']), ex['text'], key,
                                   tokenizer, cfg))
    # --- end of extra views
    return out
  return parse


def train_dataset(cfg, files: list[str], tokenizer: WordpieceTokenizer, *, seed: int,
                  start_index: int = 0, process_index: int = 0,
                  process_count: int = 1) -> tf.data.Dataset:
  """Batched training input for this host, starting at raw record `start_index`."""
  per_host = cfg.global_batch // process_count
  ds = record_stream(files, seed=seed, shuffle_buffer=cfg.shuffle_buffer,
                     process_index=process_index, process_count=process_count,
                     host_split=cfg.host_split, global_batch=cfg.global_batch,
                     start_index=start_index)
  ds = ds.map(_train_parse(cfg, tokenizer, seed), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(per_host, drop_remainder=True)
  return ds.prefetch(cfg.prefetch)


class TrainIterator:
  """NumPy batches plus the raw-record position to resume from."""

  def __init__(self, cfg, files, tokenizer, *, seed: int, start_index: int = 0,
               process_index: int = 0, process_count: int = 1):
    self.position = start_index
    # With host_split 'batch' the indices are global and this host read a slice of each global
    # batch: the position to resume from is the end of the last global batch.
    self._round_to = cfg.global_batch if (cfg.host_split == 'batch' and process_count > 1) else 1
    ds = train_dataset(cfg, files, tokenizer, seed=seed, start_index=start_index,
                       process_index=process_index, process_count=process_count)
    self._it = ds.as_numpy_iterator()

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    last = int(batch.pop('index').max())
    self.position = (last // self._round_to + 1) * self._round_to
    return batch


def load_eval_set(pattern: str, cfg, tokenizer: WordpieceTokenizer,
                  extra_int_lists=('colors', 'shapes', 'sizes')) -> dict[str, np.ndarray]:
  """Whole eval split in memory: images (eval view), tokens, texts, ids, num_objects and,
  for single-valued attributes, the first entry of each int list (or -1)."""
  spec = dict(_FEATURES)
  spec['num_objects'] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
  for name in extra_int_lists:
    spec[name] = tf.io.VarLenFeature(tf.int64)

  def parse(record):
    ex = tf.io.parse_single_example(record, spec)
    out = {'image': image_ops.eval_view(image_ops.decode(ex['image']), resize=cfg.resize_size,
                                        crop=cfg.image_size),
           'tokens': tokenizer.tokenize(ex['text']), 'text': ex['text'], 'id': ex['id'],
           'num_objects': ex['num_objects']}
    for name in extra_int_lists:
      dense = tf.sparse.to_dense(ex[name], default_value=-1)
      out[name] = tf.concat([dense, [-1]], axis=0)[0]
    return out

  ds = tf.data.TFRecordDataset(list_files(pattern)).map(parse).batch(1024)
  parts = list(ds.as_numpy_iterator())
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
