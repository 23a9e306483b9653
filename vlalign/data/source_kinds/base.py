"""The source interface: what every kind of training / evaluation source provides.

A kind is a subclass of Kind (or of FileKind, for sources made of files read by a Python
generator) in its own module of this package, named in data/spec.py's KIND_CLASSES:

  resolve(spec, arg, data_cfg, embedded)  the Source: its files (or coordinates) and size
  stream(source, ...)                     this host's raw records as (G, k, record) groups
                                          (data/groups.py), from a Cursor on
  records(source, data_cfg, checks)       every record once, in order (convert, evaluators)
  convert_inputs(source, tfds_shards)     (input name, sub-Source) per output shard of convert
  labelled(source, entry, data_cfg)       (image bytes, int labels, class names) for the
                                          zero-shot / linear-probe evaluators

Records are (image bytes, caption bytes, id, reason) tuples (sources.py); a reader never
raises on what a file holds, it yields the record with its reason code (filters.REASONS).
"""

from typing import Iterator

import numpy as np
import tensorflow as tf

from vlalign.data import filters, groups
from vlalign.data import sources as sources_lib
from vlalign.data.spec import DataError


class Kind:
  """A source kind; the defaults of the optional parts raise a DataError naming the spec."""
  name = ''
  convert_refusal = ''  # why tools/convert refuses this kind ('': it converts)

  def resolve(self, spec: str, arg: str, data_cfg, embedded: dict | None
              ) -> sources_lib.Source:
    """The Source a spec names (files / coordinates, size when known)."""
    raise NotImplementedError

  def stream(self, source: sources_lib.Source, data_cfg, checks: filters.Checks, *, seed: int,
             process_index: int, process_count: int, epochs: int | None,
             monitor: sources_lib.Monitor | None,
             start: groups.Cursor = groups.Cursor()) -> tf.data.Dataset:
    """This host's share (process_count > 1) of the raw records from `start` on, as
    (group, place in group, record) (groups.grouped), deterministic in `seed`."""
    raise NotImplementedError

  def records(self, source: sources_lib.Source, data_cfg,
              checks: filters.Checks) -> Iterator[tuple]:
    """Every record of the source once, in a fixed order."""
    raise NotImplementedError

  def convert_inputs(self, source: sources_lib.Source,
                     tfds_shards: int) -> list[tuple[str, sources_lib.Source]]:
    """(input name, Source of that input) for each output shard of tools/convert."""
    raise DataError(f'--input={source.spec}: {self.name} sources cannot be converted')

  def labelled(self, source: sources_lib.Source, entry: dict, data_cfg
               ) -> tuple[list[bytes] | None, np.ndarray, list[str] | None]:
    """(encoded images or None when streamed later, int labels, class names or None)."""
    raise DataError(f'config.evals.datasets[{entry["name"]}]: {source.spec!r} has no labels; '
                    f'use tfds:, tfrecord:, csv: or embedded:heldout')


def host_files(files: list[str], process_index: int, process_count: int
               ) -> tuple[list[str], bool]:
  """This host's files; returns (files, shard_examples) where shard_examples means every host
  reads all files and keeps every process_count-th record (too few files to split)."""
  if len(files) >= process_count:
    return files[process_index::process_count], False
  return files, True


class FileKind(Kind):
  """Sources made of files (a glob), each read by `read`, a generator of records."""

  def read(self, path: str, data_cfg, checks: filters.Checks) -> Iterator[tuple]:
    """The records of one file; never raises on its content."""
    raise NotImplementedError

  def resolve(self, spec, arg, data_cfg, embedded):
    try:
      return sources_lib.Source(spec, self.name, files=sources_lib.list_files(arg))
    except DataError as e:
      raise DataError(f'config.data.sources: {spec!r}: {e}') from None

  def file_records(self, path: tf.Tensor, data_cfg, checks: filters.Checks,
                   monitor: sources_lib.Monitor | None) -> tf.data.Dataset:
    """The records of one file (a string tensor) as a dataset; by default `read` in Python."""
    return sources_lib.python_records(self.read, path, data_cfg, checks, monitor)

  def stream(self, source, data_cfg, checks, *, seed, process_index, process_count, epochs,
             monitor, start=groups.Cursor()):
    """Files split between hosts, read in groups of config.data.cycle_length files (their order
    shuffled per epoch); with fewer files than hosts every host reads them all in a fixed order
    and keeps every process_count-th record of each group (example-level split)."""
    mine, shard_examples = host_files(source.files, process_index, process_count)
    cycle = min(data_cfg.get('cycle_length', 8), len(mine))
    plan = groups.file_plan(mine, cycle, seed=seed, shuffle=not shard_examples, start=start,
                            epochs=epochs)
    if monitor:  # a Python predicate: no further group is opened once the pipeline closes
      plan = plan.take_while(lambda *unused: monitor.alive(None))

    def make_group(paths):
      files = tf.data.Dataset.from_tensor_slices(paths)
      if monitor:
        files = files.take_while(monitor.alive)
      ds = files.interleave(lambda p: self.file_records(p, data_cfg, checks, monitor),
                            cycle_length=cycle, block_length=1,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      return ds.shard(process_count, process_index) if shard_examples else ds
    return groups.grouped(plan, make_group, data_cfg.shuffle_buffer)

  def records(self, source, data_cfg, checks):
    for path in source.files:
      yield from self.read(path, data_cfg, checks)

  def convert_inputs(self, source, tfds_shards):
    return [(p, sources_lib.Source(source.spec, source.kind, files=[p])) for p in source.files]
