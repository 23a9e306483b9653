"""Fixtures shared by the test packages."""

import pytest


@pytest.fixture(scope='session')
def cache(tmp_path_factory):
  """One VLALIGN_DATA_DIR for the runs of the whole session: the embedded data is a pure
  function of its settings, written once per setting under it."""
  return tmp_path_factory.mktemp('cache')
