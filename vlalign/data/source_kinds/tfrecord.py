"""tfrecord:<glob>: tf.train.Example shards; features config.data.image_key / text_key / id_key.

Reading (config.data.tfrecord_reader): 'native' reads a shard in the graph: tf.data's
TFRecordDataset (C++, no GIL; the files of a group in parallel), the Examples parsed and
checked CHUNK at a time by TensorFlow ops (native_checks.py: filters.check's reason codes) in a
parallel map, once a pre-check in Python has passed (clean(): every length and data CRC, no
record over data.max_record_bytes, nothing cut short, and every record an Example that Python's
protobuf reads without unknown fields and writes back to the same size, whose image / text /
id features are bytes lists: then tf.io.parse_example reads it the same (a fuzz test checks);
TensorFlow's reader would allocate what a length claims, or return the same error for ever, and
its parser would stop the stream on a record that is not an Example). A shard that fails it is
read by the Python reader (sources.read_tfrecord), record by record, so its good records are
kept and the bad ones counted by reason. So is every shard when config.data.filters uses corpus
statistics (max_shared_text / min_unigram_count: native_checks.supports), and every shard with
'python'. 'graph' puts every shard on the native path with no pre-check (for trusted shards,
e.g. tools/convert's output: what tf.data service workers can run). Both paths give the same records, ids and reasons in the same order
(tests/data/test_native_checks.py). Python callbacks left on the native path: the pre-check
(once per file version and process) and, when a Monitor is given, its count (once per chunk).
"""

import threading

import numpy as np
import tensorflow as tf
from google.protobuf import unknown_fields

from vlalign.data import native_checks, safe_io
from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base

# path -> ((size, mtime, feature keys), verdict): a shard is pre-checked once per process, not
# every epoch.
_VERDICTS: dict[str, tuple[tuple, bool]] = {}
_VERDICTS_LOCK = threading.Lock()


def clean(path: str, max_record_bytes: int, keys: tuple[str, str, str]) -> bool:
  """Whether the native path may read `path` (framing_and_examples_ok), cached per file
  version; False when it cannot be opened (the Python reader then counts it)."""
  try:
    stat = tf.io.gfile.stat(path)
    version = (stat.length, stat.mtime_nsec, keys)
    with _VERDICTS_LOCK:
      known = _VERDICTS.get(path)
    if known and known[0] == version:
      return known[1]
    # Local files through Python's buffered reader (cheaper per record than GFile).
    with (tf.io.gfile.GFile(path, 'rb') if '://' in path else
          open(path, 'rb', buffering=1 << 20)) as f:
      verdict = framing_and_examples_ok(f, stat.length, max_record_bytes, keys)
  except Exception:  # pylint: disable=broad-except  (NotFoundError, PermissionDeniedError ...)
    return False
  with _VERDICTS_LOCK:
    _VERDICTS[path] = (version, verdict)
  return verdict


def framing_and_examples_ok(f, size: int, max_record_bytes: int,
                            keys: tuple[str, str, str]) -> bool:
  """Whether every record of an open TFRecord file frames cleanly (safe_io.tfrecord_frames)
  and is an Example tf.io.parse_example reads like Python's protobuf (_bytes_features); a
  record that is not is the Python reader's to count. (No TensorFlow op runs here: this is a
  callback inside tf.data, whose threads such an op would wait on.)"""
  return all(not bad and _bytes_features(record, keys)
             for record, bad in safe_io.tfrecord_frames(f, size, max_record_bytes))


def _bytes_features(record: bytes, keys: tuple[str, str, str]) -> bool:
  """Whether Python's protobuf reads the record as an Example that it would write back to the
  same size, without unknown fields (what TensorFlow's stricter parser may refuse), whose `keys`
  features are absent or bytes lists."""
  try:
    ex = tf.train.Example.FromString(record)
  except Exception:  # pylint: disable=broad-except  (google.protobuf DecodeError)
    return False
  features = ex.features.feature
  # Whatever Python's parser dropped (a malformed map entry) or would write differently
  # changes the size; TensorFlow's parser may refuse it.
  if ex.ByteSize() != len(record) or any(_unknown(m) for m in (ex, ex.features)):
    return False
  for name, feat in features.items():
    kind = feat.WhichOneof('kind')
    if _unknown(feat) or (kind and _unknown(getattr(feat, kind))):
      return False
    if name in keys and kind not in (None, 'bytes_list'):
      return False
  return True


def _keys(data_cfg) -> tuple[str, str, str]:
  """The (image, text, id) feature names of config.data."""
  return data_cfg.image_key, data_cfg.text_key, data_cfg.id_key


def _unknown(message) -> bool:
  return len(unknown_fields.UnknownFieldSet(message)) > 0


class TFRecord(base.FileKind):
  """TFRecord shards, local or remote (tf.io.gfile)."""
  name = 'tfrecord'

  def read(self, path, data_cfg, checks):
    return sources_lib.read_tfrecord(
        path, _keys(data_cfg), checks)

  def file_records(self, path, data_cfg, checks, monitor):
    """The shard read in the graph when its pre-check passes, else by the Python reader."""
    python = super().file_records
    reader = data_cfg.get('tfrecord_reader', 'native')
    if reader == 'graph':
      return self._graph_only(path, data_cfg, checks, monitor)
    if (reader != 'native' or
        not native_checks.supports(checks)):
      return python(path, data_cfg, checks, monitor)
    keys = _keys(data_cfg)
    ok = tf.numpy_function(lambda p: np.bool_(clean(p.decode(), checks.max_record_bytes, keys)),
                           [path], tf.bool, stateful=True)
    native = tf.cast(tf.reshape(ok, []), tf.int64)
    one = tf.data.Dataset.from_tensors(path)
    return one.take(native).flat_map(lambda p: self._native(p, keys, checks, monitor)
                                     ).concatenate(one.take(1 - native).flat_map(
                                         lambda p: python(p, data_cfg, checks, monitor)))

  def _graph_only(self, path, data_cfg, checks, monitor):
    """'graph': every shard on the native path without the Python pre-check, so the reader runs
    on tf.data service workers; for trusted shards (tools/convert's output, checked when
    written): a hostile length field or a truncated shard is not caught here."""
    if not native_checks.supports(checks):
      from vlalign.config_lib import ConfigError  # pylint: disable=g-import-not-at-top
      raise ConfigError('config.data.tfrecord_reader: \'graph\' cannot apply the corpus '
                        'filters (data.filters max_shared_text / min_unigram_count); use '
                        '\'native\' or turn them off')
    return self._native(path, _keys(data_cfg), checks, monitor)

  def _native(self, path, keys, checks, monitor):
    """(image, text, id, reason) of a clean shard: TFRecordDataset, then parse_example and the
    checks as TF ops, CHUNK records per call of a parallel, ordered map."""
    name = tf.strings.split(path, '/')[-1]  # os.path.basename

    def chunk(first, records):
      image, has_image, text, has_text, uid, has_id = native_checks.parse_batch(records, keys)
      where = tf.strings.join([name, tf.strings.as_string(first)], separator=':')
      uid = tf.where(has_id & (tf.strings.length(uid) > 0), uid, where)
      return image, text, uid, native_checks.reasons(image, has_image, text, has_text, checks)

    ds = tf.data.TFRecordDataset(path, buffer_size=1 << 20).enumerate()
    ds = ds.batch(sources_lib.CHUNK).map(chunk, num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)
    if monitor:
      ds = ds.map(lambda *cols: _counted(cols, monitor))
    return ds.unbatch()

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


def _counted(cols: tuple, monitor: sources_lib.Monitor) -> tuple:
  """The chunk, its reasons counted by the monitor (a Python callback per chunk)."""

  def see(reasons):
    for r in reasons:
      monitor.see(int(r))
    return reasons

  seen = tf.numpy_function(see, [cols[3]], tf.int32, stateful=True)
  seen.set_shape([None])
  return cols[:3] + (seen,)
