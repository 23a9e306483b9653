"""Source spec strings and mixing names, without TensorFlow (config validation imports this
before anything heavy starts). The readers are in sources.py."""

KINDS = ('embedded', 'tfrecord', 'tfds', 'wds')
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
