"""Shared by the config tests: set one dotted field and expect validation to name it."""

import pytest

from vlalign import config_lib


def assert_refused(config, field: str, value, match: str) -> None:
  """Sets config.<field> (a dotted path) to `value`; config_lib.validate must raise a
  ConfigError matching `match`."""
  *parents, leaf = field.split('.')
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config)
