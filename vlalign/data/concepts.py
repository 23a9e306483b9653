"""Visual concepts per training example (ViCHA): the file `python -m vlalign.tools.concepts`
writes and the training pipeline reads (config.method.vicha.concepts_file).

Format: JSON lines, one per example: {"id": <example id>, "concepts": [top concepts, best
first], "scores": [their cosine scores]}; every line holds the same number of concepts.

In training each example draws `sample` of its stored concepts uniformly WITH replacement,
keyed on (seed, the record's stream index) through a stateless TF op (so the same on resume and
for any number of hosts with host_split='batch'), and joins them with spaces; the caption-style
string is tokenized with the training tokenizer to `max_len` tokens (data/pipeline.py). An
example whose id is not in the file makes the iterator raise a DataError naming the file and the
config field; a missing or malformed file fails when the run starts.
"""

import json

import numpy as np
import tensorflow as tf

from vlalign.data.spec import DataError

FIELD = 'config.method.vicha.concepts_file'


def read(path: str) -> tuple[list[str], list[list[str]], list[list[float]]]:
  """(ids, concepts, scores) of a concepts file; DataError naming the file and the field."""
  if not path or not tf.io.gfile.exists(path):
    raise DataError(f'{FIELD}: the concepts file {path!r} does not exist; build it with '
                    f'python -m vlalign.tools.concepts --config=<teacher config> '
                    f'--workdir=<teacher workdir> --output={path or "<file>"}')
  ids, concepts, scores = [], [], []
  with tf.io.gfile.GFile(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        uid, names = str(row['id']), [str(c) for c in row['concepts']]
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(f'{FIELD}: {path} line {n} is not {{"id", "concepts", ...}}: {e}') from e
      if not names or (concepts and len(names) != len(concepts[0])):
        raise DataError(f'{FIELD}: {path} line {n} has {len(names)} concepts; every line needs '
                        f'the same positive number ({len(concepts[0]) if concepts else ">0"})')
      ids.append(uid)
      concepts.append(names)
      scores.append([float(s) for s in row.get('scores', [])])
  if not ids:
    raise DataError(f'{FIELD}: {path} holds no examples')
  return ids, concepts, scores


def sample_indices(seed: int, index, num: int, top: int) -> tf.Tensor:
  """The `num` positions (with replacement, in [0, top)) drawn for the record at stream
  `index`: a stateless function of (seed, index)."""
  key = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
  key = tf.random.experimental.stateless_fold_in(key, 0x7C0C)
  return tf.random.stateless_uniform([num], seed=key, minval=0, maxval=top, dtype=tf.int32)


class Concepts:
  """The stored concepts as a TF lookup table, and the per-example sampler."""

  def __init__(self, path: str, sample: int, max_len: int):
    ids, concepts, _ = read(path)
    self.path, self.sample, self.max_len = path, sample, max_len
    self.top = len(concepts[0])
    self._values = tf.constant(np.asarray(concepts, object).astype(bytes))
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(len(ids),
                                                                          dtype=tf.int64))
    self._table = tf.lookup.StaticHashTable(init, default_value=-1)

  def text(self, uid: tf.Tensor, index: tf.Tensor, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(the sampled concepts joined with spaces, whether `uid` is in the file)."""
    row = self._table.lookup(uid)
    stored = tf.gather(self._values, tf.maximum(row, 0))
    picked = tf.gather(stored, sample_indices(seed, index, self.sample, self.top))
    return tf.strings.reduce_join(picked, separator=' '), row >= 0

  def check(self, found: np.ndarray, ids: np.ndarray) -> None:
    """DataError naming the file, the field and the ids missing from it."""
    if not found.all():
      missing = [i.decode() if isinstance(i, bytes) else str(i) for i in ids[~found][:5]]
      raise DataError(f'{FIELD}: {self.path} has no concepts for example ids {missing} '
                      f'({int((~found).sum())} in this batch); rebuild it with python -m '
                      f'vlalign.tools.concepts on the training data')
