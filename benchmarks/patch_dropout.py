"""FLIP patch dropout on the demo's model: train-step time and XLA FLOPs of the contrastive
loss's forward + backward (both towers, the demo's loss) with model.image.patch_dropout = p
against 0. One JSON line per setting, then the ratios.

Usage: python benchmarks/patch_dropout.py [--config demo.py[:ARG]] [--batch 128] [--repeats 6]
          [--p 0.5] [--stem patch --patch 8] [--flops_only]

  --stem / --patch override the image tower's stem and patch (e.g. a patch stem with 64
  tokens instead of the demo's 2 x 2 grid); --flops_only skips timing (for paper-size
  configs such as zerovl_vit_b16.py, which a CPU cannot step quickly).

The two settings are timed alternately (round-robin repeats), so a machine shared with other
work slows both alike; the FLOPs come from XLA's cost analysis of the compiled step and say
what the saving would be where compute, not overheads, sets the step time (an accelerator).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from vlalign import config_lib, parallel  # pylint: disable=wrong-import-position
from vlalign.losses import api as losses_api  # pylint: disable=wrong-import-position
from vlalign.models import two_tower  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(config, p: float, batch: int, flops_only: bool = False):
  """(jitted grad step, params, inputs, FLOPs, image tokens seen) for patch_dropout = p."""
  config = config.copy_and_resolve_references()
  config.model.image.patch_dropout = p
  s, length = config.data.image_size, config.data.max_len
  rng = np.random.RandomState(0)
  images = jnp.asarray(rng.uniform(-1, 1, (batch, s, s, 3)), jnp.float32)
  tokens = jnp.asarray(rng.randint(5, 180, (batch, length)), jnp.int32)
  model = two_tower.build_model(config.model, 183, length)
  init = lambda: model.init(jax.random.PRNGKey(0), images[:2], tokens[:2])
  params = jax.eval_shape(init) if flops_only else jax.jit(init)()
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])

  def loss(prm, key):
    out = model.apply(prm, images, tokens, train=True, rngs={'dropout': key})
    return losses_api.compute(config.loss, out, mesh, ('data',))['loss']

  step = jax.jit(jax.value_and_grad(loss))
  key = jax.random.PRNGKey(1)
  flops = step.lower(params, key).cost_analysis()
  grid = (s // config.model.image.patch) ** 2
  kept = grid if not p else max(1, int(grid * (1 - p)))
  return (lambda: step(params, key)), float(flops['flops']), grid, kept


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--config', default='demo.py')
  ap.add_argument('--batch', type=int, default=128)
  ap.add_argument('--repeats', type=int, default=6)
  ap.add_argument('--p', type=float, default=0.5)
  ap.add_argument('--stem', default='')
  ap.add_argument('--patch', type=int, default=0)
  ap.add_argument('--flops_only', action='store_true')
  args = ap.parse_args()
  name, _, arg = args.config.partition(':')
  config = config_lib.load_config_module(os.path.join(ROOT, 'configs', name)).get_config(arg)
  if args.stem:
    config.model.image.stem = args.stem
  if args.patch:
    config.model.image.patch = args.patch
  runs = {p: build(config, p, args.batch, args.flops_only) for p in (0.0, args.p)}
  if args.flops_only:
    for p, (_, flops, grid, kept) in runs.items():
      print(json.dumps({'patch_dropout': p, 'batch': args.batch, 'image_tokens': 1 + kept,
                        'of': 1 + grid, 'gflops': round(flops / 1e9, 2)}), flush=True)
    print(json.dumps({'flops_ratio': round(runs[args.p][1] / runs[0.0][1], 3)}), flush=True)
    return
  times = {p: [] for p in runs}
  for p, (fn, *_) in runs.items():
    jax.block_until_ready(fn())  # warm-up
  for _ in range(args.repeats):
    for p, (fn, *_) in runs.items():
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times[p].append(time.perf_counter() - t)
  for p, (_, flops, grid, kept) in runs.items():
    print(json.dumps({'patch_dropout': p, 'batch': args.batch, 'image_tokens': 1 + kept,
                      'of': 1 + grid, 'median_sec': round(float(np.median(times[p])), 4),
                      'gflops': round(flops / 1e9, 2)}), flush=True)
  base, drop = runs[0.0], runs[args.p]
  print(json.dumps({'time_ratio': round(float(np.median(times[args.p]) /
                                              np.median(times[0.0])), 3),
                    'flops_ratio': round(drop[1] / base[1], 3)}), flush=True)


if __name__ == '__main__':
  main()
