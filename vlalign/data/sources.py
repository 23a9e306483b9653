"""Training sources named by spec strings, each read as a stream of raw (image bytes, caption
bytes, id, reason) records: nothing is decoded here, and nothing a source holds can crash it.

  embedded                      every source of the built-in generated dataset, as one stream
  embedded:<name>               one of its sources (studio, sketch)
  tfrecord:<glob>               tf.train.Example shards (local, or gs:// via tf.io.gfile); the
                                feature names are config.data.image_key / text_key / id_key
  tfds:<name>[/<config>]:<split>  a TFDS dataset already prepared in config.data.tfds_data_dir;
                                the image and text features are image_key / text_key, where a
                                nested feature is a '/' path (coco_captions: captions/text) and
                                an image with several captions gives one record per caption
  wds:<glob>                    WebDataset tar shards as img2dataset writes them:
                                <key>.jpg|jpeg|png|webp|bmp|gif, <key>.txt, <key>.json
  csv:<glob>                    CSV / TSV files of image paths and captions (OpenCLIP's
                                format; columns and separator in config.data.csv)

Each kind is one class in source_kinds/ (the source interface, source_kinds/base.py) named in
spec.KIND_CLASSES; resolve / records here dispatch to it.

File records are read in Python (one generator per shard, interleaved by tf.data): a shard that
cannot be opened yields one `unreadable_shard` record, a shard cut short (truncated TFRecord,
broken tar) yields its good records and then one `truncated_file` record, a record that does
not parse (or whose data CRC fails) yields `malformed_record`. Nothing a file claims is trusted
before it is checked against a bound (safe_io.py): a TFRecord length (`record_too_large`, or
`truncated_file` past the file's end), a tar member's size (`member_too_large`), a .json's
nesting (`json_too_deep`); gzip tars are `compressed_shard`, a tar key repeating the previous
sample's is `duplicate_key`. The per-record checks (filters.check) run in the same pass, so
every skipped record carries its reason. A Monitor counts what a source's readers produced (for
the stall message, fetcher.py) and ends them when the pipeline closes. The cost is Python's: about 10 us per record,
a ceiling near 50-100k records/s per host, far above what a host feeds its accelerators
(docs/BENCHMARKS.md).
"""

import dataclasses
import json
import os
import tarfile
import threading
from typing import Iterator

import numpy as np
import tensorflow as tf

from vlalign.data import filters, safe_io
from vlalign.data.spec import DataError, kind_class, parse_spec  # pylint: disable=unused-import

IMAGE_EXTS = ('jpg', 'jpeg', 'png', 'webp', 'bmp', 'gif')
# (image, text, id, reason) as tf.data sees them.
SIGNATURE = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string),
             tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32))
# Records cross from Python into tf.data in chunks: a generator element costs about 0.5 ms of
# fixed overhead, a record about 30 us of Python work.
CHUNK = 64
_CHUNK_SIGNATURE = tuple(tf.TensorSpec([None], s.dtype) for s in SIGNATURE)


@dataclasses.dataclass
class Source:
  """One resolved source: its files (file sources) or TFDS coordinates, and its size when known
  (records; used for size-proportional mixing)."""
  spec: str
  kind: str
  files: list[str] = dataclasses.field(default_factory=list)
  tfds_name: str = ''
  tfds_split: str = ''
  size: int | None = None


class Monitor:
  """What one source's readers produced so far (raw records per reason code, read ahead of
  training included), visible while no batch comes; and a switch that ends the file readers'
  streams (TFDS streams are not switched off: they end with the process)."""

  def __init__(self, spec: str, served_by: str = ''):
    self.spec = spec
    self.served_by = served_by  # a tf.data service dispatcher: the readers run on its workers
    self.counts = [0] * len(filters.REASONS)
    self.cancelled = threading.Event()
    self._lock = threading.Lock()

  def see(self, reason: int) -> None:
    """Counts one record."""
    with self._lock:
      self.counts[reason] += 1

  def watch(self, records: Iterator[tuple]) -> Iterator[tuple]:
    """The records, each counted as it passes, until the pipeline is closing."""
    for rec in records:
      if self.cancelled.is_set():
        return
      self.see(int(rec[3]))
      yield rec

  def alive(self, unused_path: tf.Tensor) -> tf.Tensor:
    """tf.data predicate: False once the pipeline is closing (no further file is opened, so
    an endless repeat over files ends)."""
    flag = tf.numpy_function(lambda: np.bool_(not self.cancelled.is_set()), [], tf.bool,
                             stateful=True)
    return tf.reshape(flag, [])

  def describe(self) -> str:
    """'<spec>': N read, K usable, skipped {reason: n}."""
    if self.served_by:
      return (f'{self.spec!r} (read by the tf.data service workers of {self.served_by}, '
              f'data.service_address: are they running?)')
    with self._lock:
      counts = list(self.counts)
    return (f'{self.spec!r}: {sum(counts)} records read, {counts[0]} usable, skipped '
            f'{filters.counts_dict(counts)}')


def list_files(pattern: str) -> list[str]:
  """Sorted paths matching a glob (local or remote via tf.io.gfile); error naming the glob."""
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise DataError(f'no files match {pattern!r}')
  return files


def kind_of(kind: str):
  """The source_kinds class instance (the source interface) of a kind name."""
  return kind_class(kind)()


def resolve(spec: str, data_cfg, embedded: dict | None = None) -> Source:
  """The Source a spec names; `embedded` is generator.ensure_dataset's paths (needed for the
  embedded kinds)."""
  kind, arg = parse_spec(spec)
  return kind_of(kind).resolve(spec, arg, data_cfg, embedded)


def _feature(ex: tf.train.Example, key: str) -> bytes | None:
  feat = ex.features.feature.get(key)
  if feat is None or not feat.bytes_list.value:
    return None
  return feat.bytes_list.value[0]


def read_tfrecord(path: str, keys: tuple[str, str, str],
                  checks: filters.Checks) -> Iterator[tuple[bytes, bytes, bytes, int]]:
  """(image, text, id, reason) for each record of one TFRecord shard; never raises, and never
  reads a record whose length field is not checked (safe_io.tfrecord_frames)."""
  base = os.path.basename(path)
  try:
    size = tf.io.gfile.stat(path).length
    # Local files through Python's buffered reader (about 20 us a record less than GFile).
    f = (tf.io.gfile.GFile(path, 'rb') if '://' in path else
         open(path, 'rb', buffering=1 << 20))  # pylint: disable=consider-using-with
  except Exception:  # pylint: disable=broad-except  (NotFoundError, PermissionDeniedError ...)
    yield b'', b'', base.encode(), filters.CODE['unreadable_shard']
    return
  i = 0
  try:
    for record, bad in safe_io.tfrecord_frames(f, size, checks.max_record_bytes):
      uid = f'{base}:{i}'.encode()
      i += 1
      if bad:
        yield b'', b'', uid, filters.CODE[bad]
        continue
      yield example(record, keys, uid, checks)
  except Exception:  # pylint: disable=broad-except  (a read error mid-file)
    yield b'', b'', f'{base}:{i}'.encode(), filters.CODE['truncated_file']
  finally:
    f.close()


def example(record: bytes, keys: tuple[str, str, str], uid: bytes,
             checks: filters.Checks) -> tuple[bytes, bytes, bytes, int]:
  """(image, text, id, reason) of one serialized tf.train.Example."""
  try:
    ex = tf.train.Example.FromString(record)
  except Exception:  # pylint: disable=broad-except
    return b'', b'', uid, filters.CODE['malformed_record']
  image, text = _feature(ex, keys[0]), _feature(ex, keys[1])
  return image or b'', text or b'', _feature(ex, keys[2]) or uid, filters.check(image, text,
                                                                               checks)


def read_wds(path: str, checks: filters.Checks) -> Iterator[tuple[bytes, bytes, bytes, int]]:
  """(image, text, id, reason) for each sample of one img2dataset tar shard; never raises.
  Member sizes are checked from their headers before a byte is read; compressed tars are
  refused (`compressed_shard`); a sample whose key repeats one just read is `duplicate_key`."""
  base = os.path.basename(path)
  try:
    f = tf.io.gfile.GFile(path, 'rb')
    compressed = safe_io.is_compressed(f.read(6))
    f.seek(0)
    tar = None if compressed else tarfile.open(fileobj=f, mode='r|',
                                               tarinfo=safe_io.BoundedTarInfo)
  except Exception:  # pylint: disable=broad-except
    yield b'', b'', base.encode(), filters.CODE['unreadable_shard']
    return
  if compressed:
    f.close()
    yield b'', b'', base.encode(), filters.CODE['compressed_shard']
    return
  samples, last = _TarSamples(tar, checks), None
  try:
    for key, parts in samples:
      dup = key == last
      yield (b'', b'', key.encode(), filters.CODE['duplicate_key']) if dup else _sample(
          key, parts, checks)
      last = key
  except safe_io.HeaderTooLarge:
    yield b'', b'', f'{base}:{samples.key}'.encode(), filters.CODE['member_too_large']
  except Exception:  # pylint: disable=broad-except  (tarfile.ReadError, EOFError: cut short)
    yield b'', b'', f'{base}:{samples.key}'.encode(), filters.CODE['truncated_file']
  finally:
    f.close()


_WANTED = frozenset(IMAGE_EXTS + ('txt', 'json'))


class _TarSamples:
  """Iterator of (key, {ext: bytes | reason code}) over a tar's adjacent same-key members; a
  member over its bound is its reason code instead of its bytes (never read). `key` is the
  sample being read (for the error record of a shard cut short)."""

  def __init__(self, tar: tarfile.TarFile, checks: filters.Checks):
    self._members, self._checks, self.key = iter(tar), checks, None
    self._tar, self._next, self._error = tar, None, None

  def __iter__(self):
    return self

  def _read(self, member: tarfile.TarInfo, ext: str):
    limit = self._checks.max_text_bytes if ext == 'txt' else self._checks.max_member_bytes
    if member.size > limit:
      return filters.CODE['text_too_long' if ext == 'txt' else 'member_too_large']
    return self._tar.extractfile(member).read()

  def __next__(self) -> tuple[str, dict]:
    if self._error:  # after the sample that was pending when the tar broke
      raise self._error
    key, parts = None, {}
    while True:
      try:
        member = self._next or next(self._members, None)
      except Exception as e:  # pylint: disable=broad-except  (the caller counts it)
        if key is None:
          raise
        self._error = e
        return key, parts
      self._next = None
      if member is None:
        if key is None:
          raise StopIteration
        return key, parts
      name = os.path.basename(member.name)
      k, _, ext = name.partition('.')
      ext = ext.lower()
      if not member.isfile() or ext not in _WANTED:
        continue
      if key is not None and (k != key or ext in parts):
        self._next = member  # the next sample's first member (a repeated ext: same key again)
        return key, parts
      key = self.key = k
      parts[ext] = self._read(member, ext)


def _sample(key: str, parts: dict, checks: filters.Checks) -> tuple[bytes, bytes, bytes, int]:
  """(image, text, id, reason) of one tar sample."""
  image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
  text = parts.get('txt')
  reason = next((v for v in (image, text) if isinstance(v, int)), 0)
  if text is None and 'json' in parts and not reason:
    if isinstance(parts['json'], int):
      reason = parts['json']
    else:
      caption, bad = safe_io.json_caption(parts['json'], checks.max_json_depth)
      reason = filters.CODE[bad] if bad else 0
      text = caption.encode('utf-8', 'surrogateescape') if caption is not None else None
  if reason:
    return b'', b'', key.encode(), reason
  return image or b'', text or b'', key.encode(), filters.check(image, text, checks)


def python_records(read, path: tf.Tensor, data_cfg, checks: filters.Checks,
                   monitor: Monitor | None = None) -> tf.data.Dataset:
  """Records of one file (a string tensor) read by `read(path, data_cfg, checks)`, a Python
  generator, crossing into tf.data CHUNK at a time; each counted by `monitor` when given."""
  watch = monitor.watch if monitor else iter
  gen = lambda p: _chunks(watch(read(p.decode(), data_cfg, checks)))
  return tf.data.Dataset.from_generator(gen, output_signature=_CHUNK_SIGNATURE,
                                        args=(path,)).unbatch()


def _chunks(records: Iterator[tuple]) -> Iterator[tuple]:
  """Up to CHUNK records at a time as (images, texts, ids, reasons) arrays."""
  rows = []
  for rec in records:
    rows.append(rec)
    if len(rows) == CHUNK:
      yield stack(rows)
      rows = []
  if rows:
    yield stack(rows)


def stack(rows: list[tuple]) -> tuple:
  """(images, texts, ids, reasons) arrays of record tuples."""
  cols = list(zip(*rows))
  return (np.array(cols[0], dtype=object), np.array(cols[1], dtype=object),
          np.array(cols[2], dtype=object), np.array(cols[3], dtype=np.int32))


def _nested(ex: dict, path: str, spec: str):
  node = ex
  for part in path.split('/'):
    if not isinstance(node, dict) or part not in node:
      raise DataError(f'config.data: feature {path!r} is not in {spec} (features: '
                       f'{sorted(ex)})')
    node = node[part]
  return node


def tfds_records(source: Source, data_cfg, checks: filters.Checks, process_index: int,
                 process_count: int, monitor: Monitor | None = None) -> tf.data.Dataset:
  """Records of a TFDS split (this host's even share when process_count > 1), one per caption,
  in the split's fixed order (one epoch)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(source.tfds_name, data_dir=data_cfg.tfds_data_dir or None)
  split = source.tfds_split
  if process_count > 1:
    split = tfds.even_splits(split, n=process_count)[process_index]
  image_key = data_cfg.image_key
  decoders = {image_key: tfds.decode.SkipDecoding()} if '/' not in image_key else None
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                          read_config=tfds.ReadConfig(add_tfds_id=True))

  def flatten(ex):
    image = _nested(ex, image_key, source.spec)
    text = _nested(ex, data_cfg.text_key, source.spec)
    uid = tf.cast(ex['tfds_id'], tf.string)
    if image.dtype != tf.string:
      raise DataError(f'config.data.image_key: {image_key!r} of {source.spec} is not an '
                       f'encoded image feature')
    if text.shape.rank == 0:
      return tf.data.Dataset.from_tensors((image, text, uid))
    n = tf.shape(text)[0]
    ids = tf.strings.join([uid, tf.strings.as_string(tf.range(n))], separator='#')
    return tf.data.Dataset.from_tensor_slices((tf.fill([n], image), text, ids))

  def check(image, text):
    reason = filters.check(bytes(image), bytes(text), checks)
    if monitor:
      monitor.see(reason)
    return np.int32(reason)

  def with_reason(image, text, uid):
    reason = tf.numpy_function(check, [image, text], tf.int32, stateful=False)
    reason.set_shape([])
    return image, text, uid, reason

  return ds.flat_map(flatten).map(with_reason, num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True)


def records(source: Source, data_cfg, checks: filters.Checks) -> Iterator[tuple]:
  """Every record of a source once, in file order, as Python tuples (image, text, id, reason):
  what vlalign.tools.convert and the evaluators read."""
  return kind_of(source.kind).records(source, data_cfg, checks)
