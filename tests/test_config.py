"""Config validation: bad values fail before anything is built, naming the field."""

import jax
import pytest

from vlalign import config_lib, parallel


def _demo():
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs', 'demo.py')
  return config_lib.load_config_module(path).get_config('')


def test_demo_config_is_valid():
  config_lib.validate(_demo())


@pytest.mark.parametrize('field,value,match', [
    ('optimizer.name', 'sgdx', 'config.optimizer.name'),
    ('model.image.name', 'resnet9000', 'config.model.image.name'),
    ('model.image.stem', 'fancy', 'config.model.image.stem'),
    ('model.image.patch', 7, 'config.model.image.patch'),
    ('loss.reduction', 'max', 'config.loss.reduction'),
    ('nan_policy', 'ignore', 'config.nan_policy'),
    ('stop_at_step', 10_000, 'config.stop_at_step'),
    ('data.resize_size', 8, 'config.data.resize_size'),
    ('data.grayscale', 1.5, 'config.data.grayscale'),
    ('data.grayscale', -0.1, 'not a probability'),
    ('data.sources', ('s3://bucket/x',), 'config.data.sources'),
    ('data.sources', ('tfds:coco_captions',), 'config.data.sources'),
    ('data.sources', (), 'config.data.sources'),
    ('data.sources', ('embedded:studio', 'embedded:sketch'), 'config.data.mixing'),
    ('data.mixing', 'roundrobin', 'config.data.mixing'),
    ('data.weights', (1.0, 2.0), 'config.data.weights'),
    ('data.filters.max_aspect_ratio', 0.5, 'config.data.filters.max_aspect_ratio'),
    ('data.filters.max_shared_text', 10, 'config.data.filters.stats_file'),
    ('data.max_text_bytes', 0, 'config.data.max_text_bytes'),
    ('model.image.stem_conv', 'winograd', 'config.model.image.stem_conv'),
])
def test_bad_values_name_the_field(field, value, match):
  config = _demo()
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config)


def test_hybrid_stem_needs_room_for_its_patchify():
  config = _demo()
  config.model.image.update(stem='hybrid', patch=4)
  config.data.update(image_size=48, resize_size=52)
  with pytest.raises(config_lib.ConfigError, match='needs model.image.patch >= 8'):
    config_lib.validate(config)
  config.model.image.patch = 16
  config_lib.validate(config)


def test_unknown_field_is_refused_at_load():
  config = _demo()
  with pytest.raises(AttributeError, match='totl_steps'):
    config.totl_steps = 5


def test_batch_not_divisible_by_devices_and_bad_mesh():
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  parallel.check_batch(7, mesh, ('data',))  # one device: anything divides
  with pytest.raises(ValueError, match='config.mesh'):
    parallel.make_mesh({'data': 2}, jax.devices()[:1])
  with pytest.raises(ValueError, match='at most one axis'):
    parallel.make_mesh({'data': -1, 'model': -1}, jax.devices()[:1])
