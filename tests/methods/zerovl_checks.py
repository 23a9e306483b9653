"""ZeroVL's decoupled accumulation on 8 fake CPU devices: the parameter gradient of K = 4
two-pass micro-batches against jax.grad of the full-batch loss (softmax with label smoothing,
and sigmoid with a bias), and the compiled train step's temporary memory with and without
accumulation at a larger batch.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.methods.zerovl_checks
Prints one JSON line; tests/methods/test_zerovl.py asserts on it.
"""

import json

import jax
import numpy as np
import optax

from tests.sharded_checks import _tiny_config
from vlalign import optim, parallel, train
from vlalign.losses import api as losses_api
from vlalign.methods import zerovl
from vlalign.models import two_tower

VOCAB, LEN = 50, 8


def _rel(a, b) -> float:
  num = optax.global_norm(jax.tree.map(lambda x, y: x - y, a, b))
  return float(num / optax.global_norm(b))


def grad_check(loss: str, batch: int = 32, k: int = 4) -> dict:
  config = _tiny_config()
  config.data.global_batch = batch
  if loss == 'sigmoid':
    config.loss.name = 'sigmoid'
    config.model.bias_init = -10.0
    config.model.temperature_init = 0.1
  config.grad_accum.micro_batches = k
  mesh = parallel.make_mesh({'data': 8}, jax.devices()[:8])
  model = two_tower.build_model(config.model, VOCAB, LEN)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps)
  state, _ = train.init_state(config, model, tx, mesh)
  rng = np.random.RandomState(1)
  bsh = parallel.batch_sharding(mesh, ('data',))
  data = {'image': jax.device_put(rng.uniform(-1, 1, (batch, 16, 16, 3)).astype(np.float32), bsh),
          'tokens': jax.device_put(rng.randint(5, VOCAB, (batch, LEN)).astype(np.int32), bsh)}
  key = jax.random.PRNGKey(3)

  def full(params):
    out = model.apply({'params': params}, data['image'], data['tokens'], train=True,
                      rngs={'dropout': key})
    return losses_api.compute(config.loss, out, mesh, ('data',))['loss']

  ref_loss, ref = jax.jit(jax.value_and_grad(full))(state.params)
  vg = jax.jit(zerovl.make_value_and_grad(config, model, mesh))
  (dec_loss, _), dec = vg(state.params, {}, {}, data, key)
  return {'rel_grad_err': _rel(dec, ref), 'loss': float(ref_loss),
          'loss_diff': abs(float(dec_loss) - float(ref_loss)),
          'grad_norm': float(optax.global_norm(ref))}


def memory_check(batch: int = 256, k: int = 8) -> dict:
  """Temporary bytes of the compiled train step (XLA's memory analysis), K = 1 vs K = k."""
  out = {}
  for micro in (1, k):
    config = _tiny_config()
    config.data.global_batch = batch
    config.model.image.update(width=64, depth=2)
    config.model.text.update(width=64, depth=2)
    config.grad_accum.micro_batches = micro
    mesh = parallel.make_mesh({'data': 8}, jax.devices()[:8])
    model = two_tower.build_model(config.model, VOCAB, LEN)
    tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps)
    state, shardings = train.init_state(config, model, tx, mesh)
    bsh = parallel.batch_sharding(mesh, ('data',))
    step = train.make_train_step(config, model, tx, lr_fn, mesh, shardings, bsh)
    batch_shape = {'image': jax.ShapeDtypeStruct((batch, 16, 16, 3), np.float32, sharding=bsh),
                   'tokens': jax.ShapeDtypeStruct((batch, LEN), np.int32, sharding=bsh)}
    compiled = step.lower(state, batch_shape).compile()
    out[f'temp_bytes_k{micro}'] = int(compiled.memory_analysis().temp_size_in_bytes)
  return out


if __name__ == '__main__':
  print(json.dumps({'softmax': grad_check('softmax'), 'sigmoid': grad_check('sigmoid'),
                    'memory': memory_check()}))
