"""An imported workdir per golden fixture, shared by the parity and export tests."""

import pytest


@pytest.fixture(scope='session')
def imported(tmp_path_factory):
  """imported(name, fmt, **kw) -> (resolved config, workdir): the fixture checkpoint through
  tools/import_weights.import_checkpoint (once per name and arguments in a session)."""
  from tests.weights.test_parity import fixture, tiny_config  # pylint: disable=import-outside-toplevel
  from vlalign.tools import import_weights  # pylint: disable=import-outside-toplevel
  done = {}

  def get(name: str, fmt: str, model_config: str = '', image_size: int = 0):
    key = (name, fmt, model_config, image_size)
    if key not in done:
      workdir = tmp_path_factory.mktemp(name)
      config = tiny_config()
      if name in ('timm_effnet', 'hf_align'):
        config.data.image_size = config.data.resize_size = 64
      config = import_weights.import_checkpoint(config, fmt, fixture(name)[0], str(workdir),
                                                model_config, image_size)
      done[key] = (config, workdir)
    config, workdir = done[key]
    return config.copy_and_resolve_references(), workdir
  return get
