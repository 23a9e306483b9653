"""ALIGN-style model (EfficientNet with batch norm + BERT) on 8 fake CPU devices: FSDP with
align_l2's partition rules and bfloat16 compute against replicated float32 data parallelism,
and batch-norm statistics of the 8-device step against a 1-device forward pass.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.models.sharded_model_checks
Prints one JSON line; tests/models/test_sharded_models.py asserts on it.
"""

import json
import sys
import time

import jax
import ml_collections
import numpy as np

from tests.tools.test_summary import load_config
from vlalign import config_lib, optim, parallel, train
from vlalign.models import efficientnet, two_tower

VOCAB, LEN, SIZE, BATCH = 60, 8, 32, 16


def tiny_align_config(compute_dtype: str = 'float32') -> ml_collections.ConfigDict:
  """align_b7's recipe on a tiny EfficientNet + BERT, with dropout and stochastic depth on."""
  config = load_config('align_b7')
  config.data.update(sources=('embedded',), global_batch=BATCH, image_size=SIZE, resize_size=SIZE,
                     max_len=LEN)
  config.model.image = ml_collections.ConfigDict({  # new keys: a whole tower dict
      **config.model.image.to_dict(), 'variant': 'b0', 'width_coefficient': 0.25,
      'depth_coefficient': 0.25, 'drop_path_rate': 0.2})
  config.model.text = ml_collections.ConfigDict({
      'name': 'bert', 'size': 'mini', 'depth': 1, 'width': 32, 'num_heads': 2, 'dropout': 0.1})
  config.model.update(embed_dim=efficientnet.embedding_width('b0', 0.25), vocab_size=0,
                      compute_dtype=compute_dtype, remat=True)
  config.optimizer.update(warmup_steps=0, lr=1e-3)
  config.total_steps = 10
  config.mesh = {'data': 8}
  return config


def batches(n: int = 3) -> list[dict]:
  rng = np.random.RandomState(0)
  return [{'image': rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32),
           'tokens': rng.randint(1, VOCAB, (BATCH, LEN)).astype(np.int32)} for _ in range(n)]


def _leaves(tree) -> list[np.ndarray]:
  return jax.tree.leaves(jax.device_get(tree))


def _max_diff(a: list, b: list, relative: bool = False) -> float:
  """Largest |a - b| over all leaves; relative: per leaf over (1 + max |b|)."""
  return float(max(np.abs(x - y).max() / ((1.0 + np.abs(y).max()) if relative else 1.0)
                   for x, y in zip(a, b)))


def update_agreement(a: dict, b: dict) -> tuple[float, float]:
  """(cosine, relative error ||da - db|| / ||db||) of the parameter changes of two runs."""
  da = np.concatenate([(x - y).ravel() for x, y in
                       zip(a['params'], jax.tree.leaves(a['init']['params']))])
  db = np.concatenate([(x - y).ravel() for x, y in
                       zip(b['params'], jax.tree.leaves(b['init']['params']))])
  cos = float(da @ db / (np.linalg.norm(da) * np.linalg.norm(db)))
  return cos, float(np.linalg.norm(da - db) / np.linalg.norm(db))


def run(config) -> dict:
  """Three train steps on 8 devices: losses, params before / after, batch statistics."""
  config_lib.validate(config)
  mesh = parallel.make_mesh(config.mesh)
  model = two_tower.build_model(config.model, VOCAB, LEN)
  tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps)
  state, shardings = train.init_state(config, model, tx, mesh)
  init = {'params': jax.device_get(state.params), 'rng': jax.device_get(state.rng),
          'model_state': jax.device_get(state.model_state)}
  bsh = parallel.batch_sharding(mesh, config.batch_axes)
  step = train.make_train_step(config, model, tx, lr_fn, mesh, shardings, bsh)
  losses, t0 = [], time.time()
  for i, b in enumerate(batches()):
    state, metrics = step(state, {k: jax.device_put(v, bsh) for k, v in b.items()})
    losses.append(float(metrics['train/loss']))
    if i == 0:
      stats_1 = _leaves(state.model_state)
  print(f'mesh {dict(mesh.shape)}, {config.model.compute_dtype}: init + 3 steps '
        f'{time.time() - t0:.1f}s', file=sys.stderr)
  leaves = jax.tree.leaves(state.params)
  total = sum(x.size for x in leaves)
  return {'model': model, 'init': init, 'losses': losses, 'params': _leaves(state.params),
          'stats_1': stats_1, 'stats': _leaves(state.model_state),
          'sharded_fraction': sum(x.size for x in leaves
                                  if not x.sharding.is_fully_replicated) / total,
          'per_device_fraction': sum(x.addressable_shards[0].data.size for x in leaves) / total}


def one_device_stats(r: dict) -> list[np.ndarray]:
  """Batch statistics after the first step's forward pass, computed on one device."""
  init = r['init']
  rng = jax.random.fold_in(init['rng'], 0)  # the train step's key at step 0
  b = batches(1)[0]
  fn = jax.jit(lambda v, x, t: r['model'].apply(v, x, t, train=True, rngs={'dropout': rng},
                                                mutable=['batch_stats'])[1])
  one = jax.devices()[0]
  variables = jax.device_put({'params': init['params'], **init['model_state']}, one)
  return _leaves(fn(variables, jax.device_put(b['image'], one), jax.device_put(b['tokens'], one)))


def main() -> dict:
  assert jax.device_count() == 8, jax.devices()
  rep = run(tiny_align_config())
  fsdp_config = tiny_align_config()
  fsdp_config.mesh, fsdp_config.batch_axes = {'data': 2, 'fsdp': 4}, ('data', 'fsdp')
  fsdp_config.partition_rules = load_config('align_l2').partition_rules
  fsdp = run(fsdp_config)
  bf16 = run(tiny_align_config('bfloat16'))
  fsdp_cos, fsdp_err = update_agreement(fsdp, rep)
  bf16_cos, bf16_err = update_agreement(bf16, rep)
  return {
      'update_cos_fsdp': fsdp_cos, 'update_err_fsdp': fsdp_err,
      'update_cos_bf16': bf16_cos, 'update_err_bf16': bf16_err,
      'init_diff_fsdp': _max_diff(jax.tree.leaves(fsdp['init']['params']),
                                  jax.tree.leaves(rep['init']['params'])),
      'losses_rep': rep['losses'], 'losses_fsdp': fsdp['losses'], 'losses_bf16': bf16['losses'],
      'params_fsdp_vs_rep': _max_diff(fsdp['params'], rep['params']),
      'stats_fsdp_vs_rep': _max_diff(fsdp['stats'], rep['stats'], relative=True),
      'params_bf16_vs_rep': _max_diff(bf16['params'], rep['params']),
      'stats_bf16_vs_rep': _max_diff(bf16['stats'], rep['stats'], relative=True),
      'params_moved': _max_diff(rep['params'], jax.tree.leaves(rep['init']['params'])),
      'stats_rep_vs_1_device': _max_diff(rep['stats_1'], one_device_stats(rep), relative=True),
      'stats_moved': _max_diff(rep['stats_1'], jax.tree.leaves(rep['init']['model_state']),
                               relative=True),
      'fsdp_sharded_fraction': fsdp['sharded_fraction'],
      'fsdp_per_device_fraction': fsdp['per_device_fraction'],
  }


if __name__ == '__main__':
  print(json.dumps(main()))
