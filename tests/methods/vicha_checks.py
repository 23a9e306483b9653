"""ViCHA's sharded losses on 8 fake CPU devices against 1 device (run in a subprocess: XLA_FLAGS
set before jax imports).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.methods.vicha_checks
Prints one JSON line; tests/methods/test_vicha.py asserts on it. With `--step` it instead runs
four whole ViCHA train steps (queues, EMA, MAE masking, concept tokens) on 1 and on 8 devices
and prints their losses and the largest parameter / extra-state differences (about a minute on
2 cores, so not part of the test suite).
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from tests.methods import method_checks
from tests.sharded_checks import _tiny_config
from vlalign import parallel
from vlalign.methods import vicha

B, LEVELS, DIM, QUEUE = 16, 3, 8, 32


def _inputs():
  rng = np.random.RandomState(0)
  unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
  return {'img': rng.randn(B, LEVELS, DIM).astype(np.float32),
          'txt': rng.randn(B, LEVELS, DIM).astype(np.float32),
          'q': unit(rng.randn(B, DIM)).astype(np.float32),
          'qm': unit(rng.randn(B, DIM)).astype(np.float32),
          'k': unit(rng.randn(B, DIM)).astype(np.float32),
          'queue': unit(rng.randn(QUEUE, DIM)).astype(np.float32)}


def run(n: int) -> dict:
  """Values and gradients of the hierarchical and distillation losses on n devices."""
  mesh = parallel.make_mesh({'data': n}, jax.devices()[:n])
  put = lambda a: jax.device_put(a, NamedSharding(mesh, P('data')))
  x = {k: put(v) for k, v in _inputs().items()}
  scale = jnp.float32(5.0)

  def hier(img, txt):
    return sum(vicha.hier_losses(img, txt, scale, mesh))

  def distill(q, qm, k, queue):
    return vicha.distill_loss(q, qm, k, queue, scale, 0.4, mesh)

  h, (g_img, g_txt) = jax.jit(jax.value_and_grad(hier, argnums=(0, 1)))(x['img'], x['txt'])
  d, g_q = jax.jit(jax.value_and_grad(distill))(x['q'], x['qm'], x['k'], x['queue'])
  per_level = jax.jit(lambda a, b: jnp.stack(vicha.hier_losses(a, b, scale, mesh)))(
      x['img'], x['txt'])
  return {'hier': float(h), 'hier_levels': np.asarray(per_level).tolist(),
          'hier_grad_img': np.asarray(g_img).tolist(), 'hier_grad_txt': np.asarray(g_txt).tolist(),
          'distill': float(d), 'distill_grad_q': np.asarray(g_q).tolist()}


def step_check() -> dict:
  """Four ViCHA train steps on 1 and on 8 devices from the same init and data."""
  batch, vocab, length = method_checks.BATCH, method_checks.VOCAB, method_checks.LEN
  c = _tiny_config()
  c.method.name = 'vicha'
  c.model.image.update(depth=2)
  c.model.text.update(depth=2)
  c.method.vicha.update(levels=((1, 1), (2, 1)), queue_size=3 * batch, momentum=0.9,
                        concepts_len=6, distill_ramp_steps=2,
                        concepts_file='unused: batches are made here')
  c.method.vicha.decoder.update(width=16, num_heads=2)
  c.method.vicha.concepts_encoder.update(width=16, num_heads=2)
  rng = np.random.RandomState(0)
  data = [{'image': rng.uniform(-1, 1, (batch, 16, 16, 3)).astype(np.float32),
           'tokens': rng.randint(5, vocab, (batch, length)).astype(np.int32),
           'concept_tokens': np.concatenate([rng.randint(5, vocab, (batch, 4)),
                                             np.zeros((batch, 2))], 1).astype(np.int32)}
          for _ in range(4)]
  r1, r8 = method_checks.Run(c, 1), method_checks.Run(c, 8)
  m1, m8 = r1.train(data), r8.train(data)
  keys = ['train/loss', 'train/loss/itc', 'train/loss/hier', 'train/loss/mim']
  return {'losses_1': [[m[k] for k in keys] for m in m1],
          'losses_8': [[m[k] for k in keys] for m in m8],
          'param_diff': method_checks.max_diff(r1.host().params, r8.host().params),
          'extra_diff': method_checks.max_diff(r1.host().extra, r8.host().extra),
          'queue_sharding': str(r8.state.extra['queue_image']['entries'].sharding.spec)}


def main() -> None:
  assert jax.device_count() == 8, 'run with --xla_force_host_platform_device_count=8'
  if '--step' in sys.argv[1:]:
    print(json.dumps(step_check()))
  else:
    print(json.dumps({'one': run(1), 'eight': run(8)}))


if __name__ == '__main__':
  main()
