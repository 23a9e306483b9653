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

File records are read in Python (one generator per shard, interleaved by tf.data): a shard that
cannot be opened yields one `unreadable_shard` record, a shard cut short (truncated TFRecord,
broken tar) yields its good records and then one `truncated_file` record, a record that does
not parse yields `malformed_record`. The per-record checks (filters.check) run in the same
pass, so every skipped record carries its reason. The cost is Python's: about 10 us per record,
a ceiling near 50-100k records/s per host, far above what a host feeds its accelerators
(docs/BENCHMARKS.md).
"""

import dataclasses
import json
import os
import tarfile
from typing import Iterator

import numpy as np
import tensorflow as tf

from vlalign.data import filters
from vlalign.data.spec import DataError, parse_spec  # pylint: disable=unused-import

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


def list_files(pattern: str) -> list[str]:
  """Sorted paths matching a glob (local or remote via tf.io.gfile); error naming the glob."""
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise DataError(f'no files match {pattern!r}')
  return files


def resolve(spec: str, data_cfg, embedded: dict | None = None) -> Source:
  """The Source a spec names; `embedded` is generator.ensure_dataset's paths (needed for the
  embedded kinds)."""
  kind, arg = parse_spec(spec)
  if kind == 'embedded':
    if embedded is None:
      raise DataError(f'config.data.sources: {spec!r} needs the embedded dataset')
    sizes = dict(data_cfg.embedded.train_sizes)
    names = sorted(embedded['train']) if not arg else [arg]
    for name in names:
      if name not in embedded['train']:
        raise DataError(f'config.data.sources: {spec!r}: the embedded dataset has sources '
                         f'{sorted(embedded["train"])}')
    files = sorted(f for n in names for f in list_files(embedded['train'][n]))
    return Source(spec, kind, files=files, size=sum(sizes[n] for n in names))
  if kind in ('tfrecord', 'wds'):
    try:
      return Source(spec, kind, files=list_files(arg))
    except DataError as e:
      raise DataError(f'config.data.sources: {spec!r}: {e}') from None
  name, _, split = arg.rpartition(':')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_cfg.tfds_data_dir or None)
  try:
    size = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    size = None
  return Source(spec, kind, tfds_name=name, tfds_split=split, size=size or None)


def _feature(ex: tf.train.Example, key: str) -> bytes | None:
  feat = ex.features.feature.get(key)
  if feat is None or not feat.bytes_list.value:
    return None
  return feat.bytes_list.value[0]


def read_tfrecord(path: str, keys: tuple[str, str, str],
                  checks: filters.Checks) -> Iterator[tuple[bytes, bytes, bytes, int]]:
  """(image, text, id, reason) for each record of one TFRecord shard; never raises."""
  image_key, text_key, id_key = keys
  base = os.path.basename(path)
  try:
    it = tf.compat.v1.io.tf_record_iterator(path)
  except Exception:  # pylint: disable=broad-except
    yield b'', b'', base.encode(), filters.CODE['unreadable_shard']
    return
  i = 0
  while True:
    try:
      record = next(it)
    except StopIteration:
      return
    except tf.errors.NotFoundError:
      yield b'', b'', base.encode(), filters.CODE['unreadable_shard']
      return
    except Exception:  # pylint: disable=broad-except  (DataLossError: cut short / bad CRC)
      code = 'unreadable_shard' if i == 0 and not tf.io.gfile.exists(path) else 'truncated_file'
      yield b'', b'', f'{base}:{i}'.encode(), filters.CODE[code]
      return
    try:
      ex = tf.train.Example.FromString(record)
    except Exception:  # pylint: disable=broad-except
      yield b'', b'', f'{base}:{i}'.encode(), filters.CODE['malformed_record']
      i += 1
      continue
    image, text = _feature(ex, image_key), _feature(ex, text_key)
    uid = _feature(ex, id_key) or f'{base}:{i}'.encode()
    yield image or b'', text or b'', uid, filters.check(image, text, checks)
    i += 1


def read_wds(path: str, checks: filters.Checks) -> Iterator[tuple[bytes, bytes, bytes, int]]:
  """(image, text, id, reason) for each sample of one img2dataset tar shard; never raises."""
  base = os.path.basename(path)
  try:
    f = tf.io.gfile.GFile(path, 'rb')
    tar = tarfile.open(fileobj=f, mode='r|*')
  except Exception:  # pylint: disable=broad-except
    yield b'', b'', base.encode(), filters.CODE['unreadable_shard']
    return

  def emit(key, parts):
    image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
    text = parts.get('txt')
    if text is None and 'json' in parts:
      try:
        caption = json.loads(parts['json']).get('caption')
        text = caption.encode('utf-8', 'surrogateescape') if isinstance(caption, str) else None
      except (ValueError, AttributeError):
        text = None
    return image or b'', text or b'', key.encode(), filters.check(image, text, checks)

  key, parts = None, {}
  try:
    for member in tar:
      if not member.isfile():
        continue
      name = os.path.basename(member.name)
      k, _, ext = name.partition('.')
      if k != key and key is not None and parts:
        yield emit(key, parts)
        parts = {}
      key = k
      parts[ext.lower()] = tar.extractfile(member).read()
  except Exception:  # pylint: disable=broad-except  (tarfile.ReadError, EOFError: cut short)
    yield b'', b'', f'{base}:{key}'.encode(), filters.CODE['truncated_file']
    return
  finally:
    f.close()
  if key is not None and parts:
    yield emit(key, parts)


def file_records(source: Source, files: tf.data.Dataset, data_cfg, checks: filters.Checks,
                 cycle_length: int) -> tf.data.Dataset:
  """Records of `files` (a dataset of paths), interleaved one record per file in turn."""
  keys = (data_cfg.image_key, data_cfg.text_key, data_cfg.id_key)
  if source.kind == 'wds':
    gen = lambda path: _chunks(read_wds(path.decode(), checks))
  else:
    gen = lambda path: _chunks(read_tfrecord(path.decode(), keys, checks))
  return files.interleave(
      lambda p: tf.data.Dataset.from_generator(gen, output_signature=_CHUNK_SIGNATURE,
                                               args=(p,)).unbatch(),
      cycle_length=cycle_length, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)


def _chunks(records: Iterator[tuple]) -> Iterator[tuple]:
  """Up to CHUNK records at a time as (images, texts, ids, reasons) arrays."""
  rows = []
  for rec in records:
    rows.append(rec)
    if len(rows) == CHUNK:
      yield _stack(rows)
      rows = []
  if rows:
    yield _stack(rows)


def _stack(rows: list[tuple]) -> tuple:
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
                 process_count: int) -> tf.data.Dataset:
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
    return np.int32(filters.check(bytes(image), bytes(text), checks))

  def with_reason(image, text, uid):
    reason = tf.numpy_function(check, [image, text], tf.int32, stateful=False)
    reason.set_shape([])
    return image, text, uid, reason

  return ds.flat_map(flatten).map(with_reason, num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True)


def records(source: Source, data_cfg, checks: filters.Checks) -> Iterator[tuple]:
  """Every record of a source once, in file order, as Python tuples (image, text, id, reason):
  what vlalign.tools.convert reads."""
  if source.kind == 'tfds':
    yield from tfds_records(source, data_cfg, checks, 0, 1).as_numpy_iterator()
    return
  for path in source.files:
    if source.kind == 'wds':
      yield from read_wds(path, checks)
    else:
      yield from read_tfrecord(path, (data_cfg.image_key, data_cfg.text_key, data_cfg.id_key),
                               checks)

