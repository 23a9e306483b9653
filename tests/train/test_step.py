"""The train step on one device: NaN guard, and weight decay kept off norms and biases."""

import jax
import numpy as np
import pytest

from tests.sharded_checks import _tiny_config
from vlalign import optim, parallel, train
from vlalign.models import two_tower


def _setup(config):
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  model = two_tower.build_model(config.model, 50, 8)
  tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps)
  state, shardings = train.init_state(config, model, tx, mesh)
  bsh = parallel.batch_sharding(mesh, ('data',))
  return state, train.make_train_step(config, model, tx, lr_fn, mesh, shardings, bsh)


def _batch(rng, nan=False):
  img = rng.uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32)
  if nan:
    img[3, 2, 2, 0] = np.nan
  return {'image': img, 'tokens': rng.randint(1, 50, (16, 8)).astype(np.int32)}


def test_non_finite_update_is_dropped_and_counted():
  state, step = _setup(_tiny_config())
  rng = np.random.RandomState(0)
  state, _ = step(state, _batch(rng))
  before = jax.device_get(state.params)
  state, metrics = step(state, _batch(rng, nan=True))
  assert not np.isfinite(float(metrics['train/loss']))
  assert int(state.skipped) == 1 and int(metrics['train/skipped_steps']) == 1
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
    np.testing.assert_array_equal(a, b)
  state, metrics = step(state, _batch(rng))
  assert np.isfinite(float(metrics['train/loss'])) and int(state.skipped) == 1
  with pytest.raises(FloatingPointError, match='nan_policy'):
    train._check_finite(state, 3, 'stop', 0)
  assert train._check_finite(state, 3, 'skip', 0) == 1


def test_weight_decay_mask_spares_norms_biases_and_temperature():
  config = _tiny_config()
  model = two_tower.build_model(config.model, 50, 8)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3)),
                                             np.zeros((1, 8), np.int32)))['params']
  mask = optim.decay_mask(params)
  flat = {'/'.join(str(k.key) for k in p): v for p, v in
          jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert flat['log_scale'] is False
  assert flat['image_proj/kernel'] is True
  assert all(v is False for k, v in flat.items() if k.endswith('bias') or '/ln' in k)
  assert flat['image_tower/encoder/block0/mlp/fc1/kernel'] is True


@pytest.mark.parametrize('eps,lr,bad_step', [(0.0, 1e-3, 1)])
def test_non_finite_updated_parameters_are_dropped(eps, lr, bad_step):
  """Finite loss and gradients, but an update that is not finite: optimizer.eps=0 (0/0 in adam
  for the token rows no caption uses, whose gradient is 0) at step 1. The guard on the updated
  state drops that step: parameters and moments stay as they were before it."""
  config = _tiny_config()
  config.optimizer.update(eps=eps, lr=lr, warmup_steps=0, grad_clip=0.0)
  state, step = _setup(config)
  rng = np.random.RandomState(0)
  for i in range(1, bad_step + 1):
    before = jax.device_get((state.params, state.opt_state))
    batch = _batch(rng)
    batch['tokens'] = np.minimum(batch['tokens'], 20)  # rows 21..49 of the token table: grad 0
    state, metrics = step(state, batch)
    assert int(state.skipped) == (i == bad_step), i
  assert np.isfinite(float(metrics['train/loss']))
  assert np.isfinite(float(metrics['train/grad_norm']))
  after = jax.device_get((state.params, state.opt_state))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
  assert train.all_finite(state.params)


def test_uint8_images_are_normalised_inside_the_step():
  """config.data.uint8_batches: a batch of uint8 pixels trains as the host-normalised float32
  batch does (train.device_images, inside the jitted step)."""
  config = _tiny_config()
  rng = np.random.RandomState(3)
  pixels = rng.randint(0, 256, (16, 16, 16, 3)).astype(np.uint8)
  tokens = rng.randint(1, 50, (16, 8)).astype(np.int32)
  out = []
  for image in (pixels.astype(np.float32) / 127.5 - 1.0, pixels):
    state, step = _setup(config)
    state, metrics = step(state, {'image': image, 'tokens': tokens})
    out.append((float(metrics['train/loss']), jax.device_get(state.params)))
  np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1])):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
