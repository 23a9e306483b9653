"""tfrecord:<glob>: tf.train.Example shards; features config.data.image_key / text_key / id_key."""

import tensorflow as tf

from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base


class TFRecord(base.FileKind):
  """TFRecord shards, local or remote (tf.io.gfile)."""
  name = 'tfrecord'

  def read(self, path, data_cfg, checks):
    return sources_lib.read_tfrecord(
        path, (data_cfg.image_key, data_cfg.text_key, data_cfg.id_key), checks)

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
