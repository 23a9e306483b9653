"""FLIP-style patch dropout (model.image.patch_dropout) in the ViT towers: none at eval, the
right number of tokens at train time with [CLS] kept, per-example subsets, gradients only into
the kept patches, and its validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.sharded_checks import _tiny_config
from vlalign import config_lib
from vlalign.models.clip import ClipViT
from vlalign.models.vit import ViT, drop_patches

IMAGES = np.random.RandomState(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
RNGS = {'dropout': jax.random.PRNGKey(7)}


def _vit(p):
  return ViT(patch=4, width=16, depth=1, num_heads=2, patch_dropout=p)


def _apply(model, *args, **kwargs):
  """model.apply, jitted (eager Flax is slow on a loaded CPU)."""
  return jax.jit(lambda *a: model.apply(*a, **kwargs))(*args)


def test_drop_patches_keeps_cls_and_a_sorted_subset_per_example():
  x = jnp.broadcast_to(jnp.arange(17.0)[None, :, None], (4, 17, 2))  # token i holds i
  out = np.asarray(drop_patches(x, 0.5, jax.random.PRNGKey(0)))[:, :, 0]
  assert out.shape == (4, 1 + 8)
  assert (out[:, 0] == 0).all()  # [CLS] first
  assert all(len(set(r[1:])) == 8 and (np.diff(r[1:]) > 0).all() and r[1:].min() >= 1
             for r in out)
  assert len({tuple(r) for r in out}) > 1  # examples draw their own subsets
  assert drop_patches(x, 0.99, jax.random.PRNGKey(0)).shape[1] == 2  # at least one patch


def test_vit_eval_is_unchanged_and_train_drops_the_right_count():
  params = jax.jit(_vit(0.0).init)(jax.random.PRNGKey(0), IMAGES)
  ref = _apply(_vit(0.0), params, IMAGES)
  np.testing.assert_array_equal(_apply(_vit(0.5), params, IMAGES), ref)  # eval: no dropout
  np.testing.assert_array_equal(_apply(_vit(0.0), params, IMAGES, train=True, rngs=RNGS), ref)
  for p, kept in ((0.5, 8), (0.3, 11)):
    out, aux = _apply(_vit(p), params, IMAGES, train=True, rngs=RNGS, return_levels=True)
    assert aux['tokens'].shape == (3, 1 + kept, 16), p
    assert out.shape == ref.shape and not np.allclose(out, ref)


def test_gradients_reach_only_the_kept_patches():
  model = _vit(0.5)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), IMAGES[:1])
  loss = lambda p: jnp.sum(model.apply(p, IMAGES[:1], train=True, rngs=RNGS) ** 2)
  grads = jax.jit(jax.grad(loss))(params)['params']
  pos = np.abs(np.asarray(grads['pos_embed'])[0]).sum(-1)  # [1 + 16]
  assert pos[0] > 0 and (pos[1:] > 0).sum() == 8  # [CLS] + the 8 kept patches
  assert np.abs(np.asarray(grads['patch_embed']['kernel'])).sum() > 0


def test_clip_vit_patch_dropout():
  tower = lambda p: ClipViT(patch=4, width=16, depth=2, num_heads=2, output_dim=8,
                            patch_dropout=p)
  params = jax.jit(tower(0.0).init)(jax.random.PRNGKey(0), IMAGES)
  ref = _apply(tower(0.0), params, IMAGES)
  np.testing.assert_array_equal(_apply(tower(0.5), params, IMAGES), ref)
  out = _apply(tower(0.5), params, IMAGES, train=True, rngs=RNGS)
  assert out.shape == ref.shape and np.isfinite(out).all() and not np.allclose(out, ref)


@pytest.mark.parametrize('name,p', [('vit', 1.0), ('vit', -0.1), ('efficientnet', 0.5)])
def test_patch_dropout_is_validated(name, p):
  config = _tiny_config()
  config.model.image.patch_dropout = p
  config.model.image.name = name
  with pytest.raises(config_lib.ConfigError, match='model.image.patch_dropout'):
    config_lib._validate_model(config.model, config.data)
