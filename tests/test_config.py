"""Config validation: bad values fail before anything is built, naming the field."""

import jax
import pytest

from tests.config_checks import assert_refused
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
  assert_refused(_demo(), field, value, match)


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


@pytest.mark.parametrize('field,value,match', [
    ('log_every', 0, 'config.log_every'),
    ('checkpoint_every', 0, 'config.checkpoint_every'),
    ('keep_checkpoints', -1, 'config.keep_checkpoints'),
    ('data.eval_batch', 0, 'config.data.eval_batch'),
    ('model.embed_dim', 0, 'config.model.embed_dim'),
    ('data.image_size', -48, 'config.data.image_size'),
    ('model.image.num_heads', 3, 'num_heads: 3 does not divide model.image.width=128'),
    ('model.text.num_heads', 5, 'config.model.text.num_heads'),
    ('model.image.patch', 0, 'config.model.image.patch'),  # was a ZeroDivisionError
    ('optimizer.eps', 0.0, 'config.optimizer.eps'),
    ('optimizer.lr', float('inf'), 'config.optimizer.lr'),
    ('optimizer.b2', 1.0, 'config.optimizer.b2'),
    ('mesh', {'data': 0}, 'config.mesh.data'),
    ('seed', -1, 'config.seed'),
    ('peer_timeout_s', 0, 'config.peer_timeout_s'),
    ('debug.nan_loss_at_steps', (0,), 'config.debug.nan_loss_at_steps'),
])
def test_ranges_of_run_model_and_optimizer_fields(field, value, match):
  test_bad_values_name_the_field(field, value, match)


def _numeric_leaves(node, prefix=''):
  for key, value in node.items():
    name = f'{prefix}{key}'
    if hasattr(value, 'items'):
      yield from _numeric_leaves(value, name + '.')
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield name


# Numeric fields where any value works (a seed of the generated data, the optional bias);
# every other numeric field of the base config has a range that validate checks.
_UNBOUNDED = {'model.bias_init'}


def test_every_numeric_field_refuses_nan_or_a_negative_value_by_name():
  """Walks the demo config field by field: each numeric field set to NaN (floats) or -7 (ints)
  is refused with a ConfigError naming it (no other exception, no silent acceptance)."""
  config = _demo()
  missed = []
  for field in _numeric_leaves(config):
    if field in _UNBOUNDED:
      continue
    bad = _demo()
    node = bad
    *parents, leaf = field.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = float('nan') if isinstance(node[leaf], float) else -7
    try:
      config_lib.validate(bad)
      missed.append(field)
    except config_lib.ConfigError as e:
      if f'config.{field}' not in str(e) and field.split('.')[-1] not in str(e):
        missed.append(f'{field} (named {str(e)[:80]})')
  assert not missed, missed
