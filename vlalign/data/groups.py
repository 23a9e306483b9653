"""A source's record stream as a sequence of groups, so that resume costs one group, not the run.

Epoch e of a file source reads this host's files in a seeded order (a stateless function of
(seed, e)), cut into consecutive groups of config.data.cycle_length files. Group number
G = e * groups_per_epoch + g counts groups over the whole stream. A group's records are the
round-robin interleave of its files, shuffled with a buffer seeded by (seed, e, g) that does not
cross the group's end. Each record leaves here as (G, k, record), k its place in the shuffled
group, so a cursor (G, records of G consumed) names a stream position, and resuming rebuilds
group G alone and skips inside it: at most one group's records are read again, whatever the
position. Sources without files (TFDS) are one group per epoch. The plan is TF ops only
(Dataset.range mapped by stateless RNG ops over a constant table of paths), so it serialises to
tf.data service workers; data format 4 (pipeline.STATE_VERSION) names this file order.
"""

import dataclasses
from typing import Callable

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Cursor:
  """A stream position: `index` of the next record, and the group G holding it with the number
  of G's records consumed before it (index - in_group is G's first index)."""
  index: int = 0
  group: int = 0
  in_group: int = 0


def _key(seed: int, salt: int, value) -> tf.Tensor:
  """A stateless-RNG key of (seed, salt, value) (value an int64 tensor or int)."""
  base = tf.constant([seed % (1 << 63), salt], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, tf.cast(value, tf.int64))


def file_order(seed: int, epoch, n: int) -> tf.Tensor:
  """Epoch `epoch`'s order of n files: the argsort of n stateless int64 draws keyed on
  (seed, epoch) (TF ops only, so the plan serialises to tf.data service workers)."""
  draws = tf.random.stateless_uniform([n], seed=_key(seed, 1, epoch), minval=None,
                                      maxval=None, dtype=tf.int64)
  return tf.argsort(draws, stable=True)


def group_seed(seed: int, group) -> tf.Tensor:
  """The shuffle seed of group G (an int64 scalar tensor)."""
  return tf.random.stateless_uniform([], seed=_key(seed, 2, group), minval=0,
                                     maxval=1 << 62, dtype=tf.int64)


_NEVER = (1 << 63) - 1


def file_plan(files: list[str], cycle: int, *, seed: int, shuffle: bool, start: Cursor,
              epochs: int | None) -> tf.data.Dataset:
  """(G, shuffle seed, records to skip, the group's paths) from start.group on, for `epochs`
  epochs (None: endless): a Dataset.range mapped by TF ops over a constant table of paths."""
  n = len(files)
  per_epoch = -(-n // cycle)
  table = tf.constant([f.encode() for f in files], tf.string)

  def group(g_all):
    epoch, g = g_all // per_epoch, g_all % per_epoch
    order = file_order(seed, epoch, n) if shuffle else tf.range(n)
    chosen = order[g * cycle:tf.minimum((g + 1) * cycle, n)]
    skip = tf.where(g_all == start.group, tf.constant(start.in_group, tf.int64), 0)
    return g_all, group_seed(seed, g_all), skip, tf.gather(table, chosen)

  stop = _NEVER if epochs is None else epochs * per_epoch
  return tf.data.Dataset.range(start.group, stop).map(group)


def grouped(plan: tf.data.Dataset, make_group: Callable, shuffle_buffer: int
            ) -> tf.data.Dataset:
  """(G, k, record) over the groups of `plan` ((G, seed, skip, paths) elements): each group's
  records from make_group(paths), shuffled within the group, its first `skip` dropped. The next
  group is opened (and its shuffle buffer filled) while the current one is read."""
  def one(group, seed, skip, paths):
    ds = make_group(paths)
    if shuffle_buffer > 1:
      ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    return ds.enumerate().skip(skip).map(lambda k, rec: (group, k, rec))

  return plan.interleave(one, cycle_length=1, block_length=1, num_parallel_calls=1,
                           deterministic=True)


def epoch_groups(seed: int, start: Cursor, epochs: int | None) -> tf.data.Dataset:
  """The plan of a source read whole each epoch (one group per epoch, no paths)."""
  def group(g_all):
    skip = tf.where(g_all == start.group, tf.constant(start.in_group, tf.int64), 0)
    return g_all, group_seed(seed, g_all), skip, tf.zeros([0], tf.string)
  return tf.data.Dataset.range(start.group, _NEVER if epochs is None else epochs).map(group)
