"""The source interface: what every kind of training / evaluation source provides.

A kind is a subclass of Kind (or of FileKind, for sources made of files read by a Python
generator) in its own module of this package, named in data/spec.py's KIND_CLASSES:

  resolve(spec, arg, data_cfg, embedded)  the Source: its files (or coordinates) and size
  stream(source, ...)                     this host's raw records as a tf.data.Dataset
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

from vlalign.data import filters
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
             monitor: sources_lib.Monitor | None) -> tf.data.Dataset:
    """This host's share (process_count > 1) of the raw records, deterministic in `seed`."""
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

  def stream(self, source, data_cfg, checks, *, seed, process_index, process_count, epochs,
             monitor):
    """Files split between hosts; with fewer files than hosts every host reads them all in a
    fixed order and keeps every process_count-th record (example-level split)."""
    mine, shard_examples = host_files(source.files, process_index, process_count)
    cycle = min(8, len(mine))
    files = tf.data.Dataset.from_tensor_slices(mine)
    if shard_examples:  # a fixed file order, so every epoch gives each host the same records
      ds = sources_lib.file_records(source, files, data_cfg, checks, cycle, monitor)
      return ds.shard(process_count, process_index).repeat(epochs)
    files = files.shuffle(len(mine), seed=seed, reshuffle_each_iteration=True).repeat(epochs)
    return sources_lib.file_records(source, files, data_cfg, checks, cycle, monitor)

  def records(self, source, data_cfg, checks):
    for path in source.files:
      yield from self.read(path, data_cfg, checks)

  def convert_inputs(self, source, tfds_shards):
    return [(p, sources_lib.Source(source.spec, source.kind, files=[p])) for p in source.files]
