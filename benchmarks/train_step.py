"""Train-step throughput of vlalign on the architectures of ../shared/bench/openclip (side by side).

Builds the same CLIP model as bench_openclip.py (variant tiny or small: ViT image tower with a
bias-free patch conv, class token, ln_pre / ln_post and a bias-free projection; causal text
transformer pooled at the last token with a bias-free projection; pre-LN blocks, exact-erf GELU,
LayerNorm eps 1e-5; vocab 8192, 32 tokens; float32), and times vlalign's own jitted train step
(train.make_train_step: forward, softmax contrastive loss (no smoothing, the mean of the two
directions, like OpenCLIP's ClipLoss), backward, AdamW (lr 1e-4, betas 0.9/0.98, eps 1e-6,
weight decay 0.1 off gains and biases), NaN guard) on one fixed batch of random inputs made once
before the loop, as the OpenCLIP script does. Prints one JSON line.

Usage: python benchmarks/train_step.py --variant tiny --batch 128 [--steps 20] [--warmup 3]
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from vlalign import config_lib, optim, parallel, train  # pylint: disable=wrong-import-position
from vlalign.models import two_tower  # pylint: disable=wrong-import-position

# Same widths, depths, heads, patch, image size, context length and vocab as bench_openclip.py.
VARIANTS = {
    'tiny': dict(embed=256, image_size=64, patch=8, width=256, depth=4, heads=4, context=32,
                 vocab=8192, text_width=256, text_depth=4, text_heads=4),
    'small': dict(embed=512, image_size=96, patch=8, width=512, depth=6, heads=8, context=32,
                  vocab=8192, text_width=512, text_depth=6, text_heads=8),
}
# OpenCLIP's parameter totals for these variants (../shared/bench/openclip/README.md).
OPENCLIP_PARAMS = {'tiny': 8_622_081, 'small': 42_739_713}


def make_config(variant: str, batch: int) -> ml_collections.ConfigDict:
  v = VARIANTS[variant]
  config = config_lib.base_config()
  config.data.update(global_batch=batch, image_size=v['image_size'],
                     resize_size=v['image_size'], max_len=v['context'])
  config.model.image = ml_collections.ConfigDict(dict(
      name='clip_vit', patch=v['patch'], width=v['width'], depth=v['depth'],
      num_heads=v['heads'], output_dim=v['embed'], act='gelu'))
  config.model.text = ml_collections.ConfigDict(dict(
      name='clip_text', width=v['text_width'], depth=v['text_depth'],
      num_heads=v['text_heads'], output_dim=v['embed'], act='gelu'))
  config.model.update(embed_dim=v['embed'], image_projection='none', text_projection='none',
                      vocab_size=v['vocab'], temperature_init=0.07)
  config.loss.update(label_smoothing=0.0, reduction='mean')
  config.optimizer.update(name='adamw', lr=1e-4, warmup_steps=0, decay='constant',
                          weight_decay=0.1, b1=0.9, b2=0.98, eps=1e-6, grad_clip=0.0)
  config.total_steps = 1000
  config.mesh = {'data': 1}
  config_lib.validate(config)
  return config


def _cpu_wait_us():
  """Cumulative microseconds some task waited for a CPU (Linux PSI), or None."""
  try:
    with open('/proc/pressure/cpu') as f:
      return int(f.readline().split('total=')[1])
  except (OSError, IndexError, ValueError):
    return None


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--variant', choices=sorted(VARIANTS), default='tiny')
  ap.add_argument('--batch', type=int, default=128)
  ap.add_argument('--steps', type=int, default=20, help='timed steps')
  ap.add_argument('--warmup', type=int, default=3, help='untimed steps after compilation')
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args()

  v = VARIANTS[args.variant]
  config = make_config(args.variant, args.batch)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  model = two_tower.build_model(config.model, v['vocab'], v['context'])
  tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps)
  state, shardings = train.init_state(config, model, tx, mesh)
  params_total = sum(x.size for x in jax.tree.leaves(state.params))
  bsh = parallel.batch_sharding(mesh, config.batch_axes)
  step = train.make_train_step(config, model, tx, lr_fn, mesh, shardings, bsh)
  rng = np.random.RandomState(args.seed)
  s = v['image_size']
  batch = {'image': jax.device_put(rng.randn(args.batch, s, s, 3).astype(np.float32), bsh),
           'tokens': jax.device_put(rng.randint(0, v['vocab'], (args.batch, v['context']))
                                    .astype(np.int32), bsh)}
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  losses, times = [], []
  for i in range(args.warmup + args.steps):
    if i == args.warmup:
      cpu0, wait0, wall0 = time.process_time(), _cpu_wait_us(), time.perf_counter()
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    loss = float(metrics['train/loss'])  # waits for the step
    if i >= args.warmup:
      times.append(time.perf_counter() - t)
    losses.append(loss)
    print(f'step {i + 1}/{args.warmup + args.steps}: loss {loss:.5f} '
          f'{time.perf_counter() - t:.3f}s', file=sys.stderr, flush=True)
  wall = time.perf_counter() - wall0
  wait1 = _cpu_wait_us()
  sec = statistics.median(times)
  print(json.dumps({
      'framework': 'vlalign', 'jax': jax.__version__, 'variant': args.variant,
      'batch': args.batch, 'steps': args.steps, 'warmup': args.warmup,
      'sec_per_step': sec, 'pairs_per_sec': args.batch / sec,
      'min_sec': min(times), 'mean_sec': statistics.mean(times), 'max_sec': max(times),
      'params_total': params_total, 'params_match_openclip':
          params_total == OPENCLIP_PARAMS[args.variant],
      'compile_s': compile_s, 'xla_flops_per_step': float(cost.get('flops', 0.0)),
      'achieved_gflops': float(cost.get('flops', 0.0)) / sec / 1e9,
      'loss_first': losses[0], 'loss_last': losses[-1],
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
      'cpu_util_timed': (time.process_time() - cpu0) / wall,
      'cpu_wait_frac_timed': None if wait0 is None else (wait1 - wait0) / 1e6 / wall,
      'devices': str(jax.devices()[0]), 'cpus': os.cpu_count(), 'machine': platform.machine(),
      'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }))


if __name__ == '__main__':
  main()
