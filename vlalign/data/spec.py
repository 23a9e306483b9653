"""Source spec strings and mixing names, without TensorFlow (config validation imports this
before anything heavy starts). The readers are in sources.py; each kind's behaviour (resolve,
this host's records, labelled records for the evaluators, shards for convert) is one class in
vlalign/data/source_kinds/, named in KIND_CLASSES (imported only when a source is used)."""

import importlib

# Source kind -> 'module:Class' under vlalign.data.source_kinds. A new kind is one new module
# there and its line here.
KIND_CLASSES = {
    'embedded': 'embedded:Embedded',
    'tfrecord': 'tfrecord:TFRecord',
    'tfds': 'tfds:Tfds',
    'wds': 'wds:WebDataset',
    'csv': 'csvfile:Csv',
}
KINDS = tuple(KIND_CLASSES)
MIXINGS = ('none', 'weighted', 'debiased')


class DataError(ValueError):
  """Input that cannot be used as configured (no files, a bad stats file, unknown source); the
  message names the config field or file."""


def parse_spec(spec: str) -> tuple[str, str]:
  """(kind, argument) of a source spec; DataError naming the spec when it is not one."""
  if not isinstance(spec, str):
    raise DataError(f'config.data.sources: {spec!r} is not a string')
  kind, _, arg = spec.partition(':')
  if kind not in KINDS:
    raise DataError(f'config.data.sources: {spec!r} does not start with one of '
                    f'{[k + ":" for k in KINDS]}')
  if kind != 'embedded' and not arg:
    raise DataError(f'config.data.sources: {spec!r} needs an argument after "{kind}:"')
  if kind == 'tfds':
    name, sep, split = arg.rpartition(':')
    if not sep or not name or not split:
      raise DataError(f'config.data.sources: {spec!r} is not tfds:<name>[/<config>]:<split>')
  return kind, arg


def kind_class(kind: str):
  """The source kind class (source_kinds.base.Kind subclass) of a kind name."""
  if kind not in KIND_CLASSES:
    raise DataError(f'config.data.sources: unknown source kind {kind!r}; one of {list(KINDS)}')
  module, _, name = KIND_CLASSES[kind].partition(':')
  return getattr(importlib.import_module(f'vlalign.data.source_kinds.{module}'), name)
