"""ViCHA's sharded losses on 8 fake CPU devices against 1 device (run in a subprocess: XLA_FLAGS
set before jax imports).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.methods.vicha_checks
Prints one JSON line; tests/methods/test_vicha.py asserts on it.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

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


def main() -> None:
  assert jax.device_count() == 8, 'run with --xla_force_host_platform_device_count=8'
  print(json.dumps({'one': run(1), 'eight': run(8)}))


if __name__ == '__main__':
  main()
