"""Locked towers (LiT, model.<tower>.trainable=False): no optimizer state, parameters and
batch-norm statistics unchanged by training; and `python -m vlalign.main` starting from an
imported fixture tower, locked, ends with that tower bit-identical."""

import os

import jax
import numpy as np

from tests.sharded_checks import _tiny_config
from tests.train.test_main import read_metrics, run_main
from tests.weights.test_parity import FIXTURES
from vlalign import optim, parallel, train
from vlalign.models import two_tower
from vlalign.weights import common, load


def _config():
  config = _tiny_config()
  config.model.image.trainable = False
  return config


def _size(tree) -> int:
  """Elements in the non-scalar leaves (optimizer step counts left out)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree) if x.ndim)


def test_locked_tower_has_no_optimizer_state_and_does_not_move():
  config = _config()
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  model = two_tower.build_model(config.model, 50, 8)
  frozen = optim.frozen_towers(config.model)
  assert frozen == ('image_tower',)
  tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps, frozen)
  state, shardings = train.init_state(config, model, tx, mesh)
  trainable = _size({k: v for k, v in state.params.items() if k != 'image_tower'})
  assert _size(state.opt_state) == 2 * trainable  # Adam's two moments of the trainable parameters only
  step = train.make_train_step(config, model, tx, lr_fn, mesh, shardings,
                               parallel.batch_sharding(mesh, ('data',)))
  before = jax.device_get(state)
  rng = np.random.RandomState(0)
  for _ in range(2):
    batch = {'image': rng.uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32),
             'tokens': rng.randint(1, 50, (16, 8)).astype(np.int32)}
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics['train/loss']))
  after = jax.device_get(state)
  for a, b in zip(jax.tree.leaves(before.params['image_tower']),
                  jax.tree.leaves(after.params['image_tower'])):
    np.testing.assert_array_equal(a, b)
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(before.params['text_tower']),
                                                jax.tree.leaves(after.params['text_tower']))]
  assert min(moved) > 0


def test_locked_tower_keeps_its_batch_norm_statistics():
  """The step's rule for model state (batch-norm statistics of ResNet / EfficientNet towers):
  a locked tower's come back as they were, the others' as the forward pass updated them."""
  old = {'batch_stats': {'image_tower': {'bn': {'mean': np.zeros(3)}},
                         'text_tower': {'bn': {'mean': np.zeros(2)}}}}
  new = {'batch_stats': {'image_tower': {'bn': {'mean': np.ones(3)}},
                         'text_tower': {'bn': {'mean': np.ones(2)}}}}
  kept = train._keep_towers(new, old, ('image_tower',))  # pylint: disable=protected-access
  np.testing.assert_array_equal(kept['batch_stats']['image_tower']['bn']['mean'], np.zeros(3))
  np.testing.assert_array_equal(kept['batch_stats']['text_tower']['bn']['mean'], np.ones(2))


def test_main_from_imported_tower_locked_stays_bit_identical(tmp_path, cache):
  """A tiny demo run whose ViT image tower starts from the timm fixture (resized from 32 px to
  the demo's 64 px) and is locked: it trains, and the tower ends exactly as imported."""
  path = os.path.join(FIXTURES, 'timm_vit.safetensors')
  workdir = tmp_path / 'run'
  run_main(workdir, cache, '--config.model.image.stem=patch', '--config.model.image.width=48',
           '--config.model.image.depth=2', '--config.model.image.num_heads=2',
           '--config.model.image.act=gelu', f'--config.model.image.init_from=timm:{path}',
           '--config.model.image.trainable=False', '--config.total_steps=4',
           '--config.evals.heldout=False')
  assert any('train/loss' in r for r in read_metrics(workdir))
  final = load._workdir_variables(str(workdir))  # pylint: disable=protected-access
  tower = {k[len('params/image_tower/'):]: v for k, v in final.items()
           if k.startswith('params/image_tower/')}
  want = load.tower_tensors('timm', path, 'image',
                            {'encoder/block0/attn/query/kernel': (48, 2, 24)})
  want['pos_embed'] = common.resize_pos_embed(want['pos_embed'], tower['pos_embed'].shape[-2])
  assert tower.keys() == want.keys() and tower['pos_embed'].shape[-2] > 17
  for k, v in want.items():
    np.testing.assert_array_equal(tower[k], v.astype(np.float32), err_msg=k)
