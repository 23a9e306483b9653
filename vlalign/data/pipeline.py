"""Per-host tf.data input: sources -> shard by process -> interleave -> shuffle -> check ->
decode + augment -> tokenize -> mix -> batch (this host's share of the global batch) -> prefetch.

Determinism and exact resume. Each source's record stream is a deterministic function of the
seed: a sequence of groups of files (data/groups.py: seeded file order per epoch, round-robin
interleave within a group, a shuffle buffer seeded per group that stays inside it); every record
carries its index in that stream, its group and its place in the group, and its augmentation is
keyed on (seed, index). The data state saved with each checkpoint holds, per source, the cursor
after the last record this host used (index, group, records of the group consumed), and for
mixtures the number of examples / batches drawn (the mixture's choices are a stateless function
of that count). A resumed run rebuilds each stream from its cursor's group and skips inside that
group only (reading, not decoding, at most one group's records) and sees exactly the examples
an uninterrupted run would see next.

Bad records. Every raw record has a reason code (filters.REASONS; 0 = keep) decided from its
bytes before decoding (sources.py). A running per-reason count rides along with each kept
record, so a batch tells how many records were skipped, and why, up to it; an image that still
fails to decode is dropped by the decode stage and counted from the gap it leaves in the
host-local record numbering (`corrupt_image`). Nothing stops the stream: a bad shard or record
only shows in `data/skipped/<reason>`.

Mixing (config.data.mixing) over several sources:
  none      one source
  weighted  each example drawn from source s with probability w_s (config.data.weights, or
            proportional to the sources' sizes)
  debiased  ZeroVL's debiased sampling: every global batch comes from one source, drawn with
            probability w_s from the batch number, so every host draws the same source
"""

import dataclasses
import gc
import weakref
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from vlalign.data import concepts as concepts_lib
from vlalign.data import fetcher, filters, image_ops, safe_io, views
from vlalign.data import groups as groups_lib
from vlalign.data import service as service_lib
from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base as kind_base
from vlalign.data.spec import MIXINGS, DataError
from vlalign.data.tokenizers.base import Tokenizer

NUM_REASONS = len(filters.REASONS)
list_files = sources_lib.list_files
host_files = kind_base.host_files


def source_seed(seed: int, source_id: int) -> int:
  """Shuffle/augmentation seed of the source_id-th source (the first one uses `seed`)."""
  return seed + 7919 * source_id


def positioned_stream(source: sources_lib.Source, data_cfg, checks: filters.Checks, *,
                      seed: int, process_index: int = 0, process_count: int = 1,
                      start: groups_lib.Cursor = groups_lib.Cursor(), epochs: int | None = None,
                      monitor: sources_lib.Monitor | None = None) -> tf.data.Dataset:
  """Deterministic stream of (index, (group, place in group), (image, text, id, reason)) raw
  records for this host from the cursor `start` on (endless unless `epochs`).

  data_cfg.host_split 'files': each host reads its own files (or every process_count-th record
  when there are fewer files than hosts; TFDS: its even share of the split); indices count this
  host's stream, and batches depend on the number of processes. 'batch': every host reads the
  one global stream a single process would read and keeps its contiguous slice of each global
  batch (only those are decoded later); indices are global, so batches and augmentations are
  the same for any number of processes, at the cost of every host reading every record's bytes.
  """
  host_split = data_cfg.host_split
  if host_split not in ('files', 'batch'):
    raise ValueError(f'config.data.host_split: {host_split!r} is not one of [\'batch\', \'files\']')
  split = host_split == 'files' and process_count > 1
  ds = sources_lib.kind_of(source.kind).stream(
      source, data_cfg, checks, seed=seed, process_index=process_index if split else 0,
      process_count=process_count if split else 1, epochs=epochs, monitor=monitor, start=start)
  ds = ds.enumerate(start.index).map(lambda i, x: (i, (x[0], x[1]), x[2]))
  if host_split == 'batch' and process_count > 1:
    global_batch = data_cfg.global_batch
    if not global_batch or global_batch % process_count:
      raise ValueError(f'config.data.global_batch={global_batch} must be a positive multiple '
                       f'of the {process_count} processes')
    per_host = global_batch // process_count
    ds = ds.filter(lambda i, *_: (i // per_host) % process_count == process_index)
  return ds


def record_stream(source: sources_lib.Source, data_cfg, checks: filters.Checks, *, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  start: groups_lib.Cursor = groups_lib.Cursor(), epochs: int | None = None,
                  monitor: sources_lib.Monitor | None = None) -> tf.data.Dataset:
  """positioned_stream without the group places: (index, (image, text, id, reason))."""
  return positioned_stream(source, data_cfg, checks, seed=seed, process_index=process_index,
                           process_count=process_count, start=start, epochs=epochs,
                           monitor=monitor).map(lambda i, unused_where, rec: (i, rec))


def good_examples(stream: tf.data.Dataset, data_cfg, *, seed: int, source_id: int,
                  tokenizer: Tokenizer | None = None,
                  concepts: concepts_lib.Concepts | None = None,
                  served: bool = False) -> tf.data.Dataset:
  """Decoded, augmented examples (image, caption `text`) of a positioned stream, each with its
  stream `index`, `group` and `place` in it, host-local record number `local`, the running per-reason skip `counts` and
  its `source`. Captions are tokenized per batch (tokenize_batches): one vectorised call costs
  far less than a call per example. Extra views a method asks for (config.data.views:
  image2, tokens_mlm + mlm_labels, tokens_eda; data/views.py) are made here, keyed like the
  first view; they need the `tokenizer`. With `concepts` (ViCHA, data/concepts.py) each
  example also gets its sampled 'concept_text' and 'concept_found' (its id is in the file).
  `served` (tf.data service, where `index` is a worker's count): `counts` holds the records
  skipped since the previous kept one of this worker's stream, not a running total, and the
  augmentation is keyed on (seed, group, place) instead of (seed, index)."""

  def count(counts, x):
    local, (index, (group, place), (image, text, uid, reason)) = x
    counts = counts + tf.one_hot(reason, NUM_REASONS, dtype=tf.int64) * tf.cast(reason > 0,
                                                                                tf.int64)
    after = tf.where(tf.equal(reason, 0), tf.zeros_like(counts), counts) if served else counts
    return after, {'local': local, 'index': index, 'group': group, 'place': place,
                    'image': image, 'text': text, 'id': uid, 'reason': reason, 'counts': counts}

  extra = views.wanted(data_cfg.get('views'))

  def prepare(e):
    where = e['group'] * (1 << 32) + e['place'] if served else e['index']
    key = tf.stack([tf.cast(seed, tf.int64), where])
    # Strong views need the whole image; otherwise only the crop's window is decoded.
    strong1 = extra and data_cfg.views.get('image1_strong', False)
    decoded = (image_ops.decode(e['image'])
               if extra and (data_cfg.views.image2 or strong1) else None)
    out = {'text': e['text'], 'id': e['id'],
           'index': e['index'], 'local': e['local'], 'counts': e['counts'],
           'group': e['group'], 'place': e['place'],
           'source': tf.constant(source_id, tf.int32)}
    if not strong1:  # else extra_views makes 'image'
      out['image'] = image_ops.train_view(
          e['image'] if decoded is None else decoded, key, resize=data_cfg.resize_size,
          crop=data_cfg.image_size, random_crop=data_cfg.random_crop, flip=data_cfg.flip,
          grayscale=data_cfg.grayscale, dct_scaling=data_cfg.get('dct_scaling', True),
          uint8=data_cfg.get('uint8_batches', False), **image_ops.pixel_stats(data_cfg))
      out['image'].set_shape([data_cfg.image_size, data_cfg.image_size, 3])
    if extra:
      out.update(views.extra_views(data_cfg.views, decoded, e['text'], key, tokenizer,
                                   data_cfg))
    if concepts is not None:
      out['concept_text'], out['concept_found'] = concepts.text(e['id'], e['index'], seed)
    return out

  ds = stream.enumerate().scan(tf.zeros([NUM_REASONS], tf.int64), count)
  ds = ds.filter(lambda e: tf.equal(e['reason'], 0))
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.ignore_errors()  # an image whose body does not decode: counted from the gap


def tokenize_batches(ds: tf.data.Dataset, tokenizer: Tokenizer, *, seed: int = 0,
                     zerovl_text_aug: float = 0.0, concept_len: int = 0) -> tf.data.Dataset:
  """Batches with 'text' replaced by its 'tokens' (with ZeroVL's text augmentation
  when zerovl_text_aug > 0, keyed on the seed and the batch's first record), and a
  'concept_text' (if any) by its first `concept_len` 'concept_tokens'."""
  def tokenize(batch):
    batch = dict(batch)
    if 'concept_text' in batch:
      batch['concept_tokens'] = tokenizer.tokenize(batch.pop('concept_text'))[:, :concept_len]
    tokens = tokenizer.tokenize(batch.pop('text'))
    if zerovl_text_aug > 0:
      key = tf.stack([tf.cast(seed, tf.int64) * 7 + tf.cast(batch['source'][0], tf.int64),
                      batch['index'][0]])
      tokens = views.zerovl_text_augment(tokens, key, prob=zerovl_text_aug,
                                         vocab_size=tokenizer.vocab_size,
                                         mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id,
                                         regular=tokenizer.regular_range,
                                         eos_id=tokenizer.eos_id)
    batch['tokens'] = tokens
    return batch
  return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def mixture_weights(srcs: list[sources_lib.Source], data_cfg) -> np.ndarray:
  """Normalised source weights: config.data.weights, else proportional to the sources' sizes."""
  if data_cfg.weights:
    w = np.asarray(data_cfg.weights, np.float64)
    if len(w) != len(srcs) or (w <= 0).any():
      raise DataError(f'config.data.weights: {tuple(data_cfg.weights)} must hold one positive '
                       f'weight per source ({len(srcs)})')
  else:
    unknown = [s.spec for s in srcs if not s.size]
    if unknown:
      raise DataError(f'config.data.weights: empty, and the sizes of {unknown} are not known; '
                       f'give one weight per source')
    w = np.asarray([s.size for s in srcs], np.float64)
  return w / w.sum()


def _draws(weights: np.ndarray, seed: int, start: int) -> tf.data.Dataset:
  """Source index for draw k = start, start+1, ...: a stateless function of (seed, k)."""
  logits = tf.constant(np.log(weights)[None], tf.float32)
  return tf.data.Dataset.counter(start).map(
      lambda k: tf.random.stateless_categorical(logits, 1, seed=tf.stack(
          [tf.constant(seed + 104729, tf.int64), k]))[0, 0])


# The layout of DataState.to_vector: 3 adds each source's group cursor (groups.py); versions 1
# and 2 hold positions in the stream of before (one shuffle buffer over the whole stream). 4 has
# 3's layout, with each epoch's file order drawn by TF ops (groups.file_order) instead of NumPy's
# RandomState: a format-3 cursor names a group of the old order, so it counts as unplaced.
STATE_VERSION = 4


@dataclasses.dataclass
class DataState:
  """Where this host's input stands: per source, the stream position to resume from (with its
  group and the records of that group consumed; -1 when a checkpoint of an older format does
  not say), the kept examples and the skipped records per reason; and the examples / batches
  drawn overall."""
  positions: list[int]
  good: list[int]
  skipped: list[list[int]]
  examples: int = 0
  batches: int = 0
  groups: list[int] = dataclasses.field(default_factory=list)
  in_group: list[int] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if not self.groups:  # a position with no group: only the stream's start is known
      self.groups = [0 if p == 0 else -1 for p in self.positions]
      self.in_group = [0] * len(self.positions)

  @classmethod
  def initial(cls, num_sources: int) -> 'DataState':
    return cls([0] * num_sources, [0] * num_sources,
               [[0] * NUM_REASONS for _ in range(num_sources)])

  def cursor(self, s: int) -> groups_lib.Cursor:
    """Source s's stream cursor."""
    return groups_lib.Cursor(self.positions[s], self.groups[s], self.in_group[s])

  def unplaced(self) -> list[int]:
    """The sources whose position an older checkpoint format gave without its group."""
    return [s for s, g in enumerate(self.groups) if g < 0]

  def to_vector(self) -> np.ndarray:
    rows = [[p, g, c, k] + list(s) for p, g, c, k, s in zip(
        self.positions, self.good, self.groups, self.in_group, self.skipped)]
    return np.asarray([self.examples, self.batches] + sum(rows, []), np.int64)

  @classmethod
  def from_vector(cls, v, num_sources: int, version: int = STATE_VERSION) -> 'DataState':
    """The state of a to_vector() of `version` (older layouts: positions without groups)."""
    v = [int(x) for x in v]
    lead = 4 if version >= 3 else 2
    width = (len(v) - 2) // max(num_sources, 1)  # a checkpoint written with fewer reasons
    if width > lead + NUM_REASONS or width < lead or len(v) != 2 + width * num_sources:
      raise ValueError(f'a data state of {len(v)} numbers does not hold {num_sources} sources')
    rows = [v[2 + i * width:2 + (i + 1) * width] for i in range(num_sources)]
    pad = [0] * (lead + NUM_REASONS - width)  # reasons appended since: none counted yet
    state = cls([r[0] for r in rows], [r[1] for r in rows], [r[lead:] + pad for r in rows],
                v[0], v[1])
    if version >= 4:
      state.groups, state.in_group = [r[2] for r in rows], [r[3] for r in rows]
    return state


class TrainIterator:
  """NumPy batches ('image', 'tokens') of this host, plus the data state to resume from."""

  def __init__(self, data_cfg, srcs: list[sources_lib.Source], tokenizer: Tokenizer, *,
               seed: int, state: DataState | None = None, process_index: int = 0,
               process_count: int = 1, checks: filters.Checks | None = None,
               concepts: concepts_lib.Concepts | None = None):
    if data_cfg.mixing not in MIXINGS:
      raise DataError(f'config.data.mixing: {data_cfg.mixing!r} is not one of {list(MIXINGS)}')
    if data_cfg.mixing == 'none' and len(srcs) != 1:
      raise DataError(f'config.data.mixing: "none" reads one source, config.data.sources has '
                       f'{len(srcs)}; use "weighted" or "debiased"')
    n = len(srcs)
    self._base = state or DataState.initial(n)
    if len(self._base.positions) != n:
      raise ValueError(f'the saved data state has {len(self._base.positions)} sources, '
                       f'config.data.sources has {n}')
    if self._base.unplaced():
      raise ValueError(f'the data state gives sources {self._base.unplaced()} a position '
                       f'without its group (an older checkpoint format)')
    self._cursors = [self._base.cursor(s) for s in range(n)]
    self._good = [0] * n
    self._last_local = [-1] * n
    self._counts = [np.zeros(NUM_REASONS, np.int64) for _ in range(n)]
    self._examples, self._batches = self._base.examples, self._base.batches
    self.ids: np.ndarray = np.zeros([0], object)  # the ids of the last batch's examples
    checks = checks or filters.Checks.from_config(data_cfg)
    per_host = data_cfg.global_batch // process_count
    streams = []
    served = data_cfg.get('service_address', '')
    self.monitors = [sources_lib.Monitor(src.spec, served) for src in srcs]
    for s, src in enumerate(srcs):
      seed_s = source_seed(seed, s)
      stream = positioned_stream(src, data_cfg, checks, seed=seed_s,
                                 process_index=process_index, process_count=process_count,
                                 start=self._cursors[s],
                                 monitor=None if served else self.monitors[s])
      examples = good_examples(stream, data_cfg, seed=seed_s, source_id=s,
                               tokenizer=tokenizer, concepts=concepts, served=bool(served))
      streams.append(service_lib.serve(stream, examples, src, s, served) if served else
                     examples)
    if data_cfg.mixing == 'none':
      ds = streams[0].batch(per_host, drop_remainder=True)
    elif data_cfg.mixing == 'weighted':
      choice = _draws(mixture_weights(srcs, data_cfg), seed, self._examples)
      ds = tf.data.Dataset.choose_from_datasets(streams, choice).batch(per_host,
                                                                       drop_remainder=True)
    else:
      batched = [s.batch(per_host, drop_remainder=True) for s in streams]
      ds = tf.data.Dataset.choose_from_datasets(
          batched, _draws(mixture_weights(srcs, data_cfg), seed, self._batches))
    ds = tokenize_batches(ds, tokenizer, seed=seed, zerovl_text_aug=data_cfg.zerovl_text_aug,
                          concept_len=concepts.max_len if concepts else 0)
    self._concepts = concepts
    self._served = bool(served)
    self._it = fetcher.Fetcher(ds.prefetch(data_cfg.prefetch).as_numpy_iterator(),
                               self.monitors, data_cfg.get('max_wait_seconds', 600.0))
    weakref.finalize(self, self._it.close)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return self.next_batch()

  def next_batch(self, interrupted: Callable[[], bool] | None = None
                 ) -> dict[str, np.ndarray] | None:
    """The next batch; None when `interrupted()` turns true while waiting for it (a signal);
    fetcher.DataStall when none comes for config.data.max_wait_seconds."""
    batch = self._it.get(interrupted)
    if batch is None:
      return None
    src, index, local = batch.pop('source'), batch.pop('index'), batch.pop('local')
    counts, group, place = batch.pop('counts'), batch.pop('group'), batch.pop('place')
    self.ids = batch.pop('id')
    if 'concept_found' in batch:
      self._concepts.check(batch.pop('concept_found'), self.ids)
    for s in np.unique(src):
      rows = np.nonzero(src == s)[0]
      last = rows[-1]
      self._cursors[s] = groups_lib.Cursor(int(index[last]) + 1, int(group[last]),
                                       int(place[last]) + 1)
      self._last_local[s] = int(local[last])
      # Under the service: the sum of per-worker deltas (pipeline.good_examples).
      self._counts[s] = self._counts[s] + counts[rows].sum(0) if self._served else counts[last]
      self._good[s] += len(rows)
    self._examples += len(src)
    self._batches += 1
    return batch

  def close(self) -> None:
    """Releases the input pipeline (its reader threads and Python generators) now."""
    if self._it is not None:
      self._it.close()
    self._it = None
    gc.collect()

  @property
  def position(self) -> int:
    """Stream position of the first source (the only one without mixing)."""
    return self._cursors[0].index

  def _skipped(self, s: int) -> np.ndarray:
    counts = np.asarray(self._base.skipped[s], np.int64) + self._counts[s]
    if not self._served:  # a worker's host-local numbering says nothing here
      undecodable = self._last_local[s] + 1 - self._good[s] - int(self._counts[s].sum())
      counts[filters.CODE['corrupt_image']] += undecodable
    return counts

  def skipped(self) -> np.ndarray:
    """Records this host skipped so far (including before a resume), per reason code."""
    return sum((self._skipped(s) for s in range(len(self._cursors))),
               np.zeros(NUM_REASONS, np.int64))

  def state(self) -> DataState:
    """The state a resumed run starts from to continue exactly after the last batch."""
    n, c = len(self._cursors), self._cursors
    return DataState([x.index for x in c], [self._base.good[s] + self._good[s] for s in range(n)],
                     [self._skipped(s).tolist() for s in range(n)], self._examples,
                     self._batches, [x.group for x in c], [x.in_group for x in c])


def _eval_records(files: list[str], max_record_bytes: int) -> Iterator[bytes]:
  """Serialized records of eval shards; a damaged one is a DataError naming the file (an eval
  set is read whole, nothing of it may go missing)."""
  for path in files:
    with tf.io.gfile.GFile(path, 'rb') as f:
      size = tf.io.gfile.stat(path).length
      for i, (record, bad) in enumerate(safe_io.tfrecord_frames(f, size, max_record_bytes)):
        if bad:
          raise DataError(f'{path}: record {i} is {bad} (config.data.max_record_bytes='
                          f'{max_record_bytes}); the eval set must be whole')
        yield record


def load_eval_set(pattern: str, cfg, tokenizer: Tokenizer,
                  extra_int_lists=('colors', 'shapes', 'sizes')) -> dict[str, np.ndarray]:
  """Whole eval split in memory: images (eval view), tokens, texts, ids, num_objects and,
  for single-valued attributes, the first entry of each int list (or -1)."""
  spec = {'image': tf.io.FixedLenFeature([], tf.string),
          'text': tf.io.FixedLenFeature([], tf.string),
          'id': tf.io.FixedLenFeature([], tf.string, default_value=b''),
          'num_objects': tf.io.FixedLenFeature([], tf.int64, default_value=0)}
  for name in extra_int_lists:
    spec[name] = tf.io.VarLenFeature(tf.int64)

  def parse(record):
    ex = tf.io.parse_single_example(record, spec)
    out = {'image': image_ops.eval_view(image_ops.decode(ex['image']), resize=cfg.resize_size,
                                        crop=cfg.image_size, **image_ops.pixel_stats(cfg)),
           'tokens': tokenizer.tokenize(ex['text']), 'text': ex['text'], 'id': ex['id'],
           'num_objects': ex['num_objects']}
    for name in extra_int_lists:
      dense = tf.sparse.to_dense(ex[name], default_value=-1)
      out[name] = tf.concat([dense, [-1]], axis=0)[0]
    return out

  records = list(_eval_records(list_files(pattern), cfg.get('max_record_bytes', 64 << 20)))
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(records, tf.string)).map(parse).batch(1024)
  parts = list(ds.as_numpy_iterator())
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
