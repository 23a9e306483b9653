"""A source's record stream as a sequence of groups, so that resume costs one group, not the run.

Epoch e of a file source reads this host's files in a seeded order (a stateless function of
(seed, e)), cut into consecutive groups of config.data.cycle_length files. Group number
G = e * groups_per_epoch + g counts groups over the whole stream. A group's records are the
round-robin interleave of its files, shuffled with a buffer seeded by (seed, e, g) that does not
cross the group's end. Each record leaves here as (G, k, record), k its place in the shuffled
group, so a cursor (G, records of G consumed) names a stream position, and resuming rebuilds
group G alone and skips inside it: at most one group's records are read again, whatever the
position. Sources without files (TFDS) are one group per epoch.
"""

import dataclasses
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

_MASK32 = (1 << 32) - 1


@dataclasses.dataclass(frozen=True)
class Cursor:
  """A stream position: `index` of the next record, and the group G holding it with the number
  of G's records consumed before it (index - in_group is G's first index)."""
  index: int = 0
  group: int = 0
  in_group: int = 0


def _words(*values: int) -> list[int]:
  """32-bit words of non-negative 64-bit values (a RandomState seed)."""
  out = []
  for v in values:
    v %= 1 << 64
    out += [v & _MASK32, v >> 32]
  return out


def file_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """Epoch `epoch`'s order of n files; RandomState's stream is frozen across NumPy versions."""
  return np.random.RandomState(_words(seed, epoch, 1)).permutation(n)


def group_seed(seed: int, group: int) -> int:
  """The shuffle seed of group G (an int64 for tf.data)."""
  return int(np.random.RandomState(_words(seed, group, 2)).randint(0, 1 << 62, dtype=np.int64))


def file_groups(files: list[str], cycle: int, *, seed: int, shuffle: bool, start: Cursor,
                epochs: int | None, alive: Callable[[], bool]
                ) -> Iterator[tuple[int, int, int, list[bytes]]]:
  """(G, shuffle seed, records to skip, the group's paths) from start.group on; stops after
  `epochs` epochs (None: never) or when `alive()` turns false."""
  per_epoch = -(-len(files) // cycle)
  group = start.group
  while (epochs is None or group < epochs * per_epoch) and alive():
    epoch, g = divmod(group, per_epoch)
    order = file_order(seed, epoch, len(files)) if shuffle else np.arange(len(files))
    paths = [files[i].encode() for i in order[g * cycle:(g + 1) * cycle]]
    yield group, group_seed(seed, group), start.in_group if group == start.group else 0, paths
    group += 1


_GROUP_SIGNATURE = (tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64),
                    tf.TensorSpec([], tf.int64), tf.TensorSpec([None], tf.string))


def grouped(plan: Callable[[], Iterator[tuple]], make_group: Callable, shuffle_buffer: int
            ) -> tf.data.Dataset:
  """(G, k, record) over the groups `plan` yields ((G, seed, skip, paths) tuples): each group's
  records from make_group(paths), shuffled within the group, its first `skip` dropped. The next
  group is opened (and its shuffle buffer filled) while the current one is read."""
  def one(group, seed, skip, paths):
    ds = make_group(paths)
    if shuffle_buffer > 1:
      ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    return ds.enumerate().skip(skip).map(lambda k, rec: (group, k, rec))

  groups = tf.data.Dataset.from_generator(plan, output_signature=_GROUP_SIGNATURE)
  return groups.interleave(one, cycle_length=1, block_length=1, num_parallel_calls=1,
                           deterministic=True)


def epoch_groups(seed: int, start: Cursor, epochs: int | None
                 ) -> Callable[[], Iterator[tuple]]:
  """The plan of a source read whole each epoch (one group per epoch, no paths)."""
  def plan():
    group = start.group
    while epochs is None or group < epochs:
      yield group, group_seed(seed, group), start.in_group if group == start.group else 0, []
      group += 1
  return plan
