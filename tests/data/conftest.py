import pytest

from vlalign.data.embedded import generator


@pytest.fixture(scope='session')
def small_dataset(tmp_path_factory):
  """A small embedded dataset (generated once per test session)."""
  return generator.ensure_dataset(str(tmp_path_factory.mktemp('embedded')), seed=0,
                                  train_sizes={'studio': 300, 'sketch': 200}, heldout_size=120,
                                  noise_fraction=0.25, num_shards=4, vocab_size=300)
