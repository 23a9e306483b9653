"""tfrecord:<glob>: tf.train.Example shards; features config.data.image_key / text_key / id_key.

Reading (config.data.tfrecord_reader): 'native' reads a shard with tf.data's TFRecordDataset
(C++, no GIL; the files of a group in parallel) once a pre-check of its framing passes
(safe_io.tfrecord_clean: every length and data CRC, no record over data.max_record_bytes,
nothing cut short; TensorFlow's reader would allocate what a length claims, or return the same
error for ever). A shard that fails it is read by the Python reader (sources.read_tfrecord),
record by record, so its good records are kept and the bad ones counted by reason. Both paths
give the same records, ids and reasons in the same order; the Examples are parsed and checked
in Python (filters.check), CHUNK records per call.
"""

import os
import threading

import numpy as np
import tensorflow as tf

from vlalign.data import safe_io
from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base

# path -> ((size, mtime), verdict): a shard is pre-checked once per process, not every epoch.
_VERDICTS: dict[str, tuple[tuple[int, int], bool]] = {}
_VERDICTS_LOCK = threading.Lock()


def clean(path: str, max_record_bytes: int) -> bool:
  """Whether TensorFlow's reader may read `path` (safe_io.tfrecord_clean), cached per file
  version; False when it cannot be opened (the Python reader then counts it)."""
  try:
    stat = tf.io.gfile.stat(path)
    version = (stat.length, stat.mtime_nsec)
    with _VERDICTS_LOCK:
      known = _VERDICTS.get(path)
    if known and known[0] == version:
      return known[1]
    # Local files through Python's buffered reader (cheaper per record than GFile).
    with (tf.io.gfile.GFile(path, 'rb') if '://' in path else
          open(path, 'rb', buffering=1 << 20)) as f:
      verdict = safe_io.tfrecord_clean(f, stat.length, max_record_bytes)
  except Exception:  # pylint: disable=broad-except  (NotFoundError, PermissionDeniedError ...)
    return False
  with _VERDICTS_LOCK:
    _VERDICTS[path] = (version, verdict)
  return verdict


class TFRecord(base.FileKind):
  """TFRecord shards, local or remote (tf.io.gfile)."""
  name = 'tfrecord'

  def read(self, path, data_cfg, checks):
    return sources_lib.read_tfrecord(
        path, (data_cfg.image_key, data_cfg.text_key, data_cfg.id_key), checks)

  def file_records(self, path, data_cfg, checks, monitor):
    """The shard through TFRecordDataset when its pre-check passes, else the Python reader."""
    python = super().file_records
    if data_cfg.get('tfrecord_reader', 'native') != 'native':
      return python(path, data_cfg, checks, monitor)
    ok = tf.numpy_function(lambda p: np.bool_(clean(p.decode(), checks.max_record_bytes)),
                           [path], tf.bool, stateful=True)
    native = tf.cast(tf.reshape(ok, []), tf.int64)
    one = tf.data.Dataset.from_tensors(path)
    return one.take(native).flat_map(lambda p: self._native(p, data_cfg, checks, monitor)
                                     ).concatenate(one.take(1 - native).flat_map(
                                         lambda p: python(p, data_cfg, checks, monitor)))

  def _native(self, path, data_cfg, checks, monitor):
    """(image, text, id, reason) of a clean shard read by TFRecordDataset."""
    keys = (data_cfg.image_key, data_cfg.text_key, data_cfg.id_key)

    def parse(p, first, records):
      name = os.path.basename(p.decode())
      rows = [sources_lib.example(r, keys, f'{name}:{first + i}'.encode(), checks)
              for i, r in enumerate(records)]
      if monitor:
        for row in rows:
          monitor.see(int(row[3]))
      return sources_lib.stack(rows)

    def chunk(i, records):
      cols = tf.numpy_function(parse, [path, i[0], records],
                               [tf.string, tf.string, tf.string, tf.int32], stateful=False)
      for c in cols:
        c.set_shape([None])
      return tuple(cols)

    ds = tf.data.TFRecordDataset(path, buffer_size=1 << 20).enumerate()
    return ds.batch(sources_lib.CHUNK).map(chunk).unbatch()

  def labelled(self, source, entry, data_cfg):
    """The entry's image_key and int64 label_key features of each record."""
    key, n_max = entry['label_key'], entry['max_examples'] or None
    spec_ = {entry['image_key']: tf.io.FixedLenFeature([], tf.string),
             key: tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(source.files).map(
        lambda r: tf.io.parse_single_example(r, spec_))
    if n_max:
      ds = ds.take(n_max)
    rows = [(ex[entry['image_key']], int(ex[key])) for ex in ds.as_numpy_iterator()]
    return [r[0] for r in rows], [r[1] for r in rows], None
