"""BriVL and DeCLIP train steps on 8 fake CPU devices against 1 device, and resume through an
orbax checkpoint of the sharded state (run in a subprocess: XLA_FLAGS set before jax imports).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.methods.method_checks
Prints one JSON line with the measured differences; tests/methods/test_methods_sharded.py
asserts on them.
"""

import json
import tempfile

import jax
import numpy as np

from tests.sharded_checks import _tiny_config
from vlalign import checkpoint, optim, parallel, train
from vlalign.data import pipeline
from vlalign.models import two_tower

VOCAB, LEN, BATCH = 50, 8, 16


def config_for(name: str):
  config = _tiny_config()
  config.method.name = name
  if name == 'brivl':
    config.method.brivl.update(queue_size=3 * BATCH, momentum=0.9)
  else:
    config.method.declip.update(bank_size=3 * BATCH, projector_dim=24, predictor_dim=12)
    config.data.views.update(image2=True, text_mlm=True, text_eda=True)
    config.loss.update(label_smoothing=0.0, reduction='mean')
  return config


def batches(name: str, n: int) -> list[dict]:
  rng = np.random.RandomState(0)
  out = []
  for _ in range(n):
    b = {'image': rng.uniform(-1, 1, (BATCH, 16, 16, 3)).astype(np.float32),
         'tokens': rng.randint(5, VOCAB, (BATCH, LEN)).astype(np.int32)}
    if name == 'declip':
      b['image2'] = rng.uniform(-1, 1, (BATCH, 16, 16, 3)).astype(np.float32)
      b['tokens_eda'] = rng.randint(5, VOCAB, (BATCH, LEN)).astype(np.int32)
      labels = np.where(rng.rand(BATCH, LEN) < 0.3, b['tokens'], -1).astype(np.int32)
      b['tokens_mlm'] = np.where(labels >= 0, 4, b['tokens']).astype(np.int32)
      b['mlm_labels'] = labels
    out.append(b)
  return out


class Run:
  """Model, state and jitted step of `config` on the first `n` devices."""

  def __init__(self, config, n: int):
    self.config = config
    self.mesh = parallel.make_mesh({'data': n}, jax.devices()[:n])
    self.model = two_tower.build_model(config.model, VOCAB, LEN)
    self.tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps)
    self.state, self.shardings = train.init_state(config, self.model, self.tx, self.mesh)
    self.bsh = parallel.batch_sharding(self.mesh, ('data',))
    self.step = train.make_train_step(config, self.model, self.tx, lr_fn, self.mesh,
                                      self.shardings, self.bsh)

  def train(self, data: list[dict]) -> list[dict]:
    metrics = []
    for b in data:
      self.state, m = self.step(self.state, {k: jax.device_put(v, self.bsh) for k, v in b.items()})
      metrics.append({k: float(v) for k, v in m.items()})
    return metrics

  def host(self, tree=None):
    return jax.device_get(self.state if tree is None else tree)


def max_diff(a, b) -> float:
  return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def check(name: str) -> dict:
  """Four steps on 1 and on 8 devices from the same init and data; on 8 devices, the last two
  steps again after restoring the step-2 orbax checkpoint (train._restore, as main does). For
  BriVL, the EMA formula and the queues' contents after the first step (1 device)."""
  config, data = config_for(name), batches(name, 4)
  one, eight = Run(config, 1), Run(config, 8)
  init = one.host()
  first = one.train(data[:1])
  after1 = one.host()
  out = {}
  if name == 'brivl':
    # The first step's momentum encoder is m * init + (1 - m) * init = the initial parameters:
    # the queues' first B rows are its keys of the first batch, the rest is the random init.
    keys = one.model.apply({'params': init.params}, data[0]['image'], data[0]['tokens'])
    out['queue_text_rows_diff'] = max_diff(after1.extra['queue_text']['entries'][:BATCH],
                                           keys['text'])
    out['queue_image_rows_diff'] = max_diff(after1.extra['queue_image']['entries'][:BATCH],
                                            keys['image'])
    out['queue_rest_diff'] = max_diff(after1.extra['queue_text']['entries'][BATCH:],
                                      init.extra['queue_text']['entries'][BATCH:])
    out['ema_step1_diff'] = max_diff(after1.extra['ema']['params'], init.params)
  else:  # T and T' of the first batch replaced the bank's first 2B rows
    changed = np.any(after1.extra['bank']['entries'] != init.extra['bank']['entries'], axis=1)
    out['bank_changed_rows'] = np.nonzero(changed)[0].tolist()
  second = one.train(data[1:2])
  if name == 'brivl':
    m = config.method.brivl.momentum
    want = jax.tree.map(lambda e, p: m * np.asarray(e, np.float64) + (1 - m) * p,
                        after1.extra['ema']['params'], after1.params)
    out['ema_step2_diff'] = max_diff(one.host().extra['ema']['params'], want)
    out['ema_vs_params_diff'] = max_diff(one.host().extra['ema']['params'], one.host().params)
  metrics1 = first + second + one.train(data[2:])
  metrics8 = eight.train(data[:2])
  with tempfile.TemporaryDirectory() as workdir:
    manager = checkpoint.make_manager(f'{workdir}/checkpoints', save_every=1, keep=2)
    at32 = pipeline.DataState([32], [32], [[0] * pipeline.NUM_REASONS], groups=[0],
                              in_group=[32])
    checkpoint.save(manager, 2, eight.state, train.data_item(config, [at32.to_vector()]),
                    force=True)
    manager.wait_until_finished()
    saved = eight.host()
    metrics8 += eight.train(data[2:])
    straight = eight.host()
    _, eight.state, data_state = train._restore(config, workdir, eight.state, eight.shardings)
    position = data_state.positions[0]
    restored = eight.host()
    resumed = eight.train(data[2:])
  s1 = one.host()
  components = lambda m: {k: v for k, v in m.items() if k.startswith('train/loss/')}
  out.update({
      'losses_1': [r['train/loss'] for r in metrics1],
      'losses_8': [r['train/loss'] for r in metrics8],
      'components_1': components(metrics1[-1]), 'components_8': components(metrics8[-1]),
      'param_diff': max_diff(s1.params, straight.params),
      'extra_diff': max_diff(s1.extra, straight.extra),
      'extra_sharded': [str(x.sharding.spec) for x in jax.tree.leaves(eight.state.extra)
                        if x.ndim == 2 and x.shape[0] == 3 * BATCH],
      'resume': {'position': position, 'restored_step': int(restored.step),
                 'restored_extra_diff': max_diff(saved.extra, restored.extra),
                 'restored_params_diff': max_diff(saved.params, restored.params),
                 'losses': [r['train/loss'] for r in resumed],
                 'params_diff': max_diff(straight.params, eight.host().params),
                 'extra_diff': max_diff(straight.extra, eight.host().extra)},
  })
  return out


if __name__ == '__main__':
  assert jax.device_count() == 8, jax.devices()
  print(json.dumps({name: check(name) for name in ('brivl', 'declip')}))
