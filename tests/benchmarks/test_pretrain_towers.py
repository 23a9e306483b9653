"""configs/pretrain_towers.py (the data-efficiency benchmark's pretrained regime): it validates,
its loss carries no cross-modal signal, and a vlalign workdir's towers load through
`model.<tower>.init_from=vlalign:<workdir>`."""

import os

import jax
import numpy as np
import pytest

from vlalign import config_lib, parallel
from vlalign.methods import get_method
from vlalign.models import two_tower
from vlalign.weights import common as weights_common
from vlalign.weights import load as weights_load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB, BATCH = 50, 16
TEXT_KEYS = ('tokens', 'tokens_mlm', 'tokens_eda', 'mlm_labels')


def _config(name: str, arg: str):
  return config_lib.load_config_module(os.path.join(ROOT, 'configs', name)).get_config(arg)


def test_pretrain_config_validates_with_only_the_unimodal_losses():
  for arg in ('', 'image', 'tiny'):
    config = _config('pretrain_towers.py', arg)
    config_lib.validate(config)
    assert config.optimizer.lr == (1e-4 if arg == 'image' else 3e-3)
    assert config.method.name == 'declip'
    assert dict(config.method.declip.weights) == {'mvs': 0.0, 'nns': 0.0, 'iss': 1.0, 'tss': 1.0}
  # the towers are those of the recipes' small configs, so init_from fits them
  small, demo = _config('pretrain_towers.py', ''), _config('demo.py', 'v48')
  assert small.model.image.to_dict() == demo.model.image.to_dict()
  assert small.model.text.to_dict() == demo.model.text.to_dict()
  with pytest.raises(ValueError, match='unknown option'):
    _config('pretrain_towers.py', 'smal')


def _batch(config, rng):
  size, length = config.data.image_size, config.data.max_len
  tokens = rng.randint(5, VOCAB, (BATCH, length)).astype(np.int32)
  labels = np.where(rng.rand(BATCH, length) < 0.3, tokens, -1).astype(np.int32)
  return {'image': rng.uniform(-1, 1, (BATCH, size, size, 3)).astype(np.float32),
          'image2': rng.uniform(-1, 1, (BATCH, size, size, 3)).astype(np.float32),
          'tokens': tokens, 'tokens_mlm': np.where(labels >= 0, 4, tokens).astype(np.int32),
          'tokens_eda': rng.randint(5, VOCAB, (BATCH, length)).astype(np.int32),
          'mlm_labels': labels}


def test_no_gradient_crosses_modalities_and_the_pairing_is_unused():
  """The total's gradient w.r.t. the logit scale (only the cross-modal terms read it) is 0, and
  shuffling the captions against the images leaves every gradient unchanged; the MVS term's
  gradient, computed in the same step, does change (so the check can fail)."""
  config = _config('pretrain_towers.py', 'tiny')
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  model = two_tower.build_model(config.model, VOCAB, config.data.max_len)
  method = get_method('declip')
  rng_key = jax.random.PRNGKey(0)
  size = config.data.image_size
  variables = dict(model.init(rng_key, np.zeros((1, size, size, 3), np.float32),
                              np.zeros((1, config.data.max_len), np.int32)))
  params, extra = method.init(config, model, variables.pop('params'), variables, rng_key)
  objective = method.make_objective(config, model, mesh)

  @jax.jit
  def grads(params, batch, mvs_weight):  # the total's gradient, plus mvs_weight x MVS's
    def loss(p):
      total, (losses, *_) = objective(p, variables, extra, batch, rng_key)
      return total + mvs_weight * losses['loss/mvs']
    return jax.grad(loss)(params)

  rng = np.random.RandomState(0)
  batch = _batch(config, rng)
  perm = rng.permutation(BATCH)
  shuffled = {k: v[perm] if k in TEXT_KEYS else v for k, v in batch.items()}
  g, g_shuf, g_mvs, g_mvs_shuf = jax.device_get(
      [grads(params, b, w) for w in (0.0, 1.0) for b in (batch, shuffled)])
  assert float(g['log_scale']) == 0.0 and float(g_mvs['log_scale']) != 0.0
  assert not np.abs(g['text_proj']['kernel']).any()  # only MVS / NNS read the text embedding
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_shuf)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  tower = lambda t: np.concatenate([x.ravel() for x in jax.tree.leaves(t['image_tower'])])
  assert np.abs(tower(g)).max() > 0  # SimSiam trains the image tower
  assert np.abs(tower(g_mvs) - tower(g_mvs_shuf)).max() > 1e-3 * np.abs(tower(g_mvs)).max()


def test_init_from_vlalign_workdir_loads_one_tower(tiny_workdir):
  config = _config('demo.py', 'tiny')
  config.model.image.init_from = f'vlalign:{tiny_workdir}'
  config_lib.validate(config)
  model = two_tower.build_model(config.model, VOCAB, config.data.max_len)
  images = np.zeros((1, config.data.image_size, config.data.image_size, 3), np.float32)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), images,
                            np.zeros((1, config.data.max_len), np.int32))
  saved = weights_load._workdir_variables(str(tiny_workdir))  # pylint: disable=protected-access
  loaded = weights_load.initial_variables(config.model, abstract)
  assert loaded and all(k.startswith('params/image_tower/') for k in loaded)
  assert set(loaded) == {k for k in saved if k.startswith('params/image_tower/')}
  for k, v in loaded.items():
    np.testing.assert_array_equal(v, saved[k])
  config.model.image.init_from = f'vlalign:{tiny_workdir}/eval'
  with pytest.raises(weights_common.WeightsError, match='no checkpoint'):
    weights_load.initial_variables(config.model, abstract)
