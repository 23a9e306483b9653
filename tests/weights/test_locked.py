"""Locked towers (LiT, model.<tower>.trainable=False): `python -m vlalign.main` starting from
an imported fixture tower, locked, trains and ends with that tower bit-identical and without
optimizer state; batch-norm statistics of a locked tower are kept."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train.test_main import read_metrics, run_main
from tests.weights.test_parity import FIXTURES
from vlalign import train
from vlalign.weights import common, load


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


@pytest.mark.slow
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
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, 'checkpoints', '4', 'state'))
  moments = [(jax.tree_util.keystr(p), x) for p, x in
             jax.tree_util.tree_flatten_with_path(state['opt_state'])[0] if x.ndim]
  assert not [p for p, _ in moments if 'image_tower' in p]  # no optimizer state when locked
  text = [np.abs(x).max() for p, x in moments if 'text_tower' in p]
  assert text and max(text) > 0  # the text tower trains
  tower = {k[len('params/image_tower/'):]: v for k, v in final.items()
           if k.startswith('params/image_tower/')}
  want = load.tower_tensors('timm', path, 'image',
                            {'encoder/block0/attn/query/kernel': (48, 2, 24)})
  want['pos_embed'] = common.resize_pos_embed(want['pos_embed'], tower['pos_embed'].shape[-2])
  assert tower.keys() == want.keys() and tower['pos_embed'].shape[-2] > 17
  for k, v in want.items():
    np.testing.assert_array_equal(tower[k], v.astype(np.float32), err_msg=k)
