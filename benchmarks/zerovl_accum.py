"""Decoupled gradient accumulation on this machine: seconds per train step and XLA's temporary
memory of the compiled step for K = 1 (no accumulation) and K micro-batches, looped (lax.scan,
the default) and unrolled (`grad_accum.unroll`), same config, same random batch, one run.

python benchmarks/zerovl_accum.py [--config=zerovl_vit_b16:small] [--batch=256] [--k=2]
    [--steps=5]

Prints one JSON line per variant: variant, sec_per_step (mean of --steps after one warm-up
step), temp_mb (compiled.memory_analysis().temp_size_in_bytes).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from vlalign import config_lib, optim, parallel, train  # pylint: disable=wrong-import-position
from vlalign.models import two_tower  # pylint: disable=wrong-import-position

VOCAB = 1000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str):
  return config_lib.load_config_module(os.path.join(ROOT, 'configs', f'{name}.py')).get_config(arg)


def measure(config, steps: int) -> dict:
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  model = two_tower.build_model(config.model, VOCAB, config.data.max_len)
  tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps)
  state, shardings = train.init_state(config, model, tx, mesh)
  bsh = parallel.batch_sharding(mesh, ('data',))
  step = train.make_train_step(config, model, tx, lr_fn, mesh, shardings, bsh)
  n, s = config.data.global_batch, config.data.image_size
  rng = np.random.default_rng(0)
  batch = {'image': jax.device_put(rng.normal(size=(n, s, s, 3)).astype(np.float32), bsh),
           'tokens': jax.device_put(
               rng.integers(1, VOCAB, size=(n, config.data.max_len)).astype(np.int32), bsh)}
  compiled = step.lower(state, batch).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  t0 = time.time()
  for _ in range(steps):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  return {'sec_per_step': (time.time() - t0) / steps, 'temp_mb': temp / 2**20}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='zerovl_vit_b16:small')
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--k', type=int, default=2)
  p.add_argument('--steps', type=int, default=5)
  a = p.parse_args()
  name, _, arg = a.config.partition(':')
  for variant, k, unroll in (('k1', 1, False), (f'k{a.k}_looped', a.k, False),
                             (f'k{a.k}_unrolled', a.k, True)):
    config = load_config(name, arg)
    config.data.global_batch = a.batch
    config.grad_accum.micro_batches = k
    config.grad_accum.unroll = unroll
    print(json.dumps({'variant': variant, 'config': a.config, 'batch': a.batch,
                      **measure(config, a.steps)}), flush=True)


if __name__ == '__main__':
  main()
