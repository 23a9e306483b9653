"""Checks run in a subprocess with 8 fake CPU devices (XLA_FLAGS set before jax imports).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.sharded_checks NAME
Prints one JSON line with the measured differences; tests/test_sharded.py asserts on them.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from tests import reference
from vlalign import config_lib, optim, parallel, train
from vlalign.losses.contrastive import softmax_contrastive
from vlalign.models import two_tower


def _unit(rng, n, d):
  v = rng.randn(n, d).astype(np.float32)
  return v / np.linalg.norm(v, axis=1, keepdims=True)


def loss_check() -> dict:
  """8-device loss, gradients and compiled HLO against 1 device and NumPy."""
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.RandomState(0)
  x, y = _unit(rng, 32, 16), _unit(rng, 32, 16)
  out = {}
  for n in (1, 8):
    mesh = parallel.make_mesh({'data': n}, jax.devices()[:n])
    sh = parallel.batch_sharding(mesh, ('data',))
    xs, ys = jax.device_put(x, sh), jax.device_put(y, sh)
    f = lambda a, b, s: softmax_contrastive(a, b, s, mesh, label_smoothing=0.1)['loss']
    vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))
    val, grads = vg(xs, ys, jnp.float32(5.0))
    out[n] = (float(val), [np.asarray(g) for g in grads])
    if n == 8:
      hlo = vg.lower(xs, ys, jnp.float32(5.0)).compile().as_text()
  want, _, _, gx, gy, gs = reference.contrastive_loss(x, y, 5.0, 0.1)
  return {
      'loss_8': out[8][0], 'loss_1': out[1][0], 'loss_numpy': float(want),
      'grad_x_diff': float(np.abs(out[8][1][0] - gx).max()),
      'grad_y_diff': float(np.abs(out[8][1][1] - gy).max()),
      'grad_s_diff': float(abs(out[8][1][2] - gs)),
      'grad_1v8_diff': float(max(np.abs(a - b).max() for a, b in zip(out[1][1], out[8][1]))),
      'hlo_has_BxB': 'f32[32,32]' in hlo, 'hlo_has_bxB': 'f32[4,32]' in hlo,
  }


def _tiny_config():
  config = config_lib.base_config()
  config.data.global_batch = 16
  config.data.image_size, config.data.resize_size, config.data.max_len = 16, 16, 8
  config.model.image.update(patch=8, width=32, depth=1, num_heads=2)
  config.model.text.update(width=32, depth=1, num_heads=2)
  config.model.embed_dim = 16
  config.optimizer.warmup_steps = 0
  config.total_steps = 10
  return config


def train_step_check() -> dict:
  """Three full train steps on a 1-device and an 8-device mesh from the same init and data."""
  config = _tiny_config()
  rng = np.random.RandomState(0)
  batches = [{'image': rng.uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32),
              'tokens': rng.randint(1, 50, (16, 8)).astype(np.int32)} for _ in range(3)]
  results = {}
  for n in (1, 8):
    mesh = parallel.make_mesh({'data': n}, jax.devices()[:n])
    model = two_tower.build_model(config.model, 50, 8)
    tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps)
    state, shardings = train.init_state(config, model, tx, mesh)
    bsh = parallel.batch_sharding(mesh, ('data',))
    step = train.make_train_step(config, model, tx, lr_fn, mesh, shardings, bsh)
    losses = []
    for b in batches:
      state, metrics = step(state, {k: jax.device_put(v, bsh) for k, v in b.items()})
      losses.append(float(metrics['train/loss']))
    results[n] = (losses, jax.tree.leaves(jax.device_get(state.params)))
  diff = max(float(np.abs(a - b).max()) for a, b in zip(results[1][1], results[8][1]))
  return {'losses_1': results[1][0], 'losses_8': results[8][0], 'param_diff': diff}


if __name__ == '__main__':
  print(json.dumps({'loss': loss_check, 'train_step': train_step_check}[sys.argv[1]]()))
