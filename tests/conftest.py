"""Fixtures shared by the test packages."""

import os

import pytest


def _session_dir(tmp_path_factory, name: str):
  """A folder for the whole test session. Under pytest-xdist (pytest.ini: 2 workers) it is one
  folder for all workers, next to their base folders (the controller's session folder), so what
  one worker writes into it the other reuses; everything written there is safe to write from
  several processes at once (the embedded data is written to a private folder and renamed into
  place, JAX's compilation cache writes one file per executable, as the multi-process tests
  already need)."""
  if os.environ.get('PYTEST_XDIST_WORKER'):
    path = tmp_path_factory.getbasetemp().parent / name
    path.mkdir(exist_ok=True)
    return path
  return tmp_path_factory.mktemp(name)


@pytest.fixture(scope='session')
def cache(tmp_path_factory):
  """One VLALIGN_DATA_DIR for the runs of the whole session: the embedded data is a pure
  function of its settings, written once per setting under it."""
  return _session_dir(tmp_path_factory, 'cache')


@pytest.fixture(scope='session')
def small_dataset(tmp_path_factory):
  """A small embedded dataset (generated once per test session)."""
  from vlalign.data.embedded import generator  # pylint: disable=g-import-not-at-top
  return generator.ensure_dataset(str(_session_dir(tmp_path_factory, 'embedded')), seed=0,
                                  train_sizes={'studio': 300, 'sketch': 200}, heldout_size=120,
                                  noise_fraction=0.25, num_shards=4, vocab_size=300)


@pytest.fixture(scope='session', autouse=True)
def jax_compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache for every `vlalign.main` (and other) subprocess of the
  session: the tests start the same tiny configs many times (resume, SIGKILL, SIGTERM, damaged
  checkpoints ...), and a cache hit returns the identical executable, so results do not change,
  only the compile time goes. Subprocesses inherit it through os.environ."""
  path = _session_dir(tmp_path_factory, 'jax_cache')
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('JAX_COMPILATION_CACHE_DIR', str(path))
    mp.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
    yield path


@pytest.fixture(scope='session')
def tiny_workdir(tmp_path_factory, cache):
  """A workdir trained in-process with configs/demo.py:tiny (6 steps, held-out eval at the end):
  config.json, checkpoints 2/4/6 and eval/heldout.json, for the inference API and the tools."""
  import os  # pylint: disable=g-import-not-at-top
  from vlalign import config_lib, train  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = config_lib.load_config_module(os.path.join(root, 'configs', 'demo.py')).get_config(
      'tiny')
  config.data.cache_dir = str(cache)
  workdir = tmp_path_factory.mktemp('tiny_workdir')
  train.train_and_evaluate(config, str(workdir))
  return workdir


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: multi-minute multi-process runs; run with '
                          'VLALIGN_SLOW_TESTS=1 (kept out of the CI budget)')


def pytest_collection_modifyitems(config, items):
  """Tests marked `slow` run only with VLALIGN_SLOW_TESTS=1 (docs/BENCHMARKS.md, "Test suite")."""
  import os  # pylint: disable=g-import-not-at-top
  if os.environ.get('VLALIGN_SLOW_TESTS') == '1':
    return
  skip = pytest.mark.skip(reason='slow: set VLALIGN_SLOW_TESTS=1 to run it')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)
