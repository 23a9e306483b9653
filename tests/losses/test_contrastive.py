"""Softmax contrastive loss against the NumPy oracle (1 device; 8 devices in test_sharded)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import reference
from vlalign import parallel
from vlalign.losses.contrastive import softmax_contrastive


def _unit(rng, n, d):
  v = rng.randn(n, d).astype(np.float32)
  return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize('smoothing,reduction', [(0.0, 'sum'), (0.1, 'sum'), (0.1, 'mean')])
def test_value_and_gradient_match_numpy(smoothing, reduction):
  rng = np.random.RandomState(0)
  x, y = _unit(rng, 12, 8), _unit(rng, 12, 8)
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  scale = np.float32(4.0)

  def f(x, y, s):
    return softmax_contrastive(x, y, s, mesh, label_smoothing=smoothing, reduction=reduction)

  out = jax.jit(f)(x, y, scale)
  grads = jax.jit(jax.grad(lambda *a: f(*a)['loss'], argnums=(0, 1, 2)))(x, y, scale)
  want, i2t, t2i, gx, gy, gs = reference.contrastive_loss(x, y, scale, smoothing, reduction)
  np.testing.assert_allclose(out['loss'], want, rtol=1e-5)
  np.testing.assert_allclose(out['loss/i2t'], i2t, rtol=1e-5)
  np.testing.assert_allclose(out['loss/t2i'], t2i, rtol=1e-5)
  np.testing.assert_allclose(grads[0], gx, atol=1e-6)
  np.testing.assert_allclose(grads[1], gy, atol=1e-6)
  np.testing.assert_allclose(grads[2], gs, rtol=1e-4)


def test_uncorrelated_small_scale_tends_to_log_batch():
  """docs/METHODS.md (Oracles) sanity: with s -> 0 each direction tends to ln(B), with or
  without smoothing."""
  rng = np.random.RandomState(1)
  x, y = _unit(rng, 64, 16), _unit(rng, 64, 16)
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  for smoothing in (0.0, 0.1):
    out = softmax_contrastive(x, y, jnp.float32(1e-4), mesh, label_smoothing=smoothing)
    np.testing.assert_allclose(out['loss/i2t'], np.log(64), rtol=1e-4)
    np.testing.assert_allclose(out['loss'], 2 * np.log(64), rtol=1e-4)


def test_perfect_alignment_gives_full_accuracy_and_low_loss():
  rng = np.random.RandomState(2)
  x = _unit(rng, 16, 32)
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  out = softmax_contrastive(x, x, jnp.float32(50.0), mesh)
  assert float(out['accuracy/i2t']) == 1.0 and float(out['accuracy/t2i']) == 1.0
  assert float(out['loss']) < 0.2


def test_bad_reduction_is_rejected():
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  x = np.ones((2, 2), np.float32)
  with pytest.raises(ValueError, match='loss.reduction'):
    softmax_contrastive(x, x, 1.0, mesh, reduction='max')
