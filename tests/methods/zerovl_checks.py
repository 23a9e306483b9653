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


def grad_check(loss: str, batch: int = 32, k: int = 4, unroll: bool = False) -> dict:
  config = _tiny_config()
  config.grad_accum.unroll = unroll
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


def mixup_check(batch: int = 32, k: int = 4) -> dict:
  """With mixup: the decoupled gradient against jax.grad of the one-pass mixup objective, for
  a step whose coin shows heads and one showing tails; the head's loss against NumPy soft
  targets; lambda = 1 against the plain loss."""
  config = _tiny_config()
  config.data.global_batch = batch
  config.mixup.enabled = True
  config.grad_accum.micro_batches = k
  mesh = parallel.make_mesh({'data': 8}, jax.devices()[:8])
  model = two_tower.build_model(config.model, VOCAB, LEN)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps)
  state, _ = train.init_state(config, model, tx, mesh)
  rng = np.random.RandomState(2)
  bsh = parallel.batch_sharding(mesh, ('data',))
  data = {'image': jax.device_put(rng.uniform(-1, 1, (batch, 16, 16, 3)).astype(np.float32), bsh),
          'tokens': jax.device_put(rng.randint(5, VOCAB, (batch, LEN)).astype(np.int32), bsh)}
  objective = zerovl.make_objective(config, model, mesh)
  full = jax.jit(jax.value_and_grad(lambda p, key: objective(p, {}, {}, data, key)[0]))
  vg = jax.jit(zerovl.make_value_and_grad(config, model, mesh))
  out = {}
  for seed in range(20):  # one step of each coin side
    key = jax.random.PRNGKey(seed)
    lam, heads = zerovl.mixup_draw(key, config.mixup.beta)
    side = 'heads' if bool(heads) else 'tails'
    if side in out:
      continue
    ref_loss, ref = full(state.params, key)
    (dec_loss, (losses, *_)), dec = vg(state.params, {}, {}, data, key)
    out[side] = {'lambda': float(lam), 'rel_grad_err': _rel(dec, ref),
                 'loss_diff': abs(float(dec_loss) - float(ref_loss)), 'loss': float(ref_loss),
                 'logged_lambda': float(losses['mixup/lambda'])}
    if len(out) == 2:
      break

  # The head against NumPy: soft targets lambda / 1 - lambda at the partner's global column;
  # the partner is the mirror within each device's micro-batch (ZeroVL's accumulation runner).
  config.loss.update(label_smoothing=0.0, reduction='sum')
  parts = zerovl.Parts(config, model, mesh)
  x = rng.normal(size=(batch, 8)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  t = rng.normal(size=(batch, 8)).astype(np.float32)
  put = lambda a: jax.device_put(a, bsh)
  scale, lam = np.float32(5.0), np.float32(0.3)
  b = batch // 8
  m = b // k
  partner = np.concatenate([np.arange(r * b + j * m, r * b + (j + 1) * m)[::-1]
                            for r in range(8) for j in range(k)])
  res = {}
  for heads in (True, False):
    loss, _ = jax.jit(lambda x_, t_: parts.head(x_, t_, scale, 0.0, lam, heads))(put(x), put(t))
    tt = t if heads else lam * t + (1 - lam) * t[partner]
    y = tt / np.linalg.norm(tt, axis=1, keepdims=True)
    logits = scale * x.astype(np.float64) @ y.T
    target = lam * np.eye(batch) + (1 - lam) * np.eye(batch)[partner]
    lsm = lambda z: z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - \
        z.max(1, keepdims=True)
    want = -(target * lsm(logits)).sum(1).mean() - (target.T * lsm(logits.T)).sum(1).mean()
    res['heads' if heads else 'tails'] = abs(float(loss) - want) / want
  out['numpy_rel_err'] = res
  plain = zerovl.Parts(config.copy_and_resolve_references(), model, mesh)
  plain.mixup = False
  one = float(jax.jit(lambda x_, t_: parts.head(x_, t_, scale, 0.0, 1.0, False))(put(x),
                                                                               put(t))[0])
  ref = float(jax.jit(lambda x_, t_: plain.head(x_, t_, scale, 0.0, 1.0, True))(put(x),
                                                                              put(t))[0])
  out['lambda1_diff'] = abs(one - ref)
  return out


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
                    'softmax_unrolled': grad_check('softmax', unroll=True),
                    'mixup': mixup_check(), 'memory': memory_check()}))
