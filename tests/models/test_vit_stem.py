"""The conv/hybrid stems' matmul form (model.image.stem_conv='matmul') is the same model as
lax's convolutions: identical parameters, outputs and gradients to float round-off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from vlalign.models import vit


@pytest.mark.parametrize('size', [16, 9, 5])  # even, odd and tiny inputs: SAME padding differs
def test_strided_conv3x3_equals_lax_conv(size):
  x = jnp.asarray(np.random.RandomState(0).randn(2, size, size + 2, 5), jnp.float32)
  ref = nn.Conv(7, (3, 3), strides=(2, 2), padding='SAME')
  ours = vit.StridedConv3x3(7)
  p = ref.init(jax.random.PRNGKey(3), x)
  q = ours.init(jax.random.PRNGKey(3), x)
  jax.tree.map(np.testing.assert_array_equal, p, q)  # same names, shapes and initial values
  p = jax.tree.map(lambda a: a + 0.1, p)  # a nonzero bias too
  np.testing.assert_allclose(ours.apply(p, x), ref.apply(p, x), rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(p, x)
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(p, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_ref, g_ours)


def test_patchify_matmul_equals_lax_conv():
  x = jnp.asarray(np.random.RandomState(1).randn(2, 16, 12, 3), jnp.float32)
  ref = nn.Conv(6, (4, 4), strides=(4, 4), padding='VALID')
  ours = vit.PatchifyMatmul(6, 4)
  p = ref.init(jax.random.PRNGKey(0), x)
  jax.tree.map(np.testing.assert_array_equal, p, ours.init(jax.random.PRNGKey(0), x))
  p = jax.tree.map(lambda a: a + 0.1, p)
  np.testing.assert_allclose(ours.apply(p, x), ref.apply(p, x), rtol=1e-5, atol=1e-5)
  g_ref = jax.grad(lambda p: jnp.sum(ref.apply(p, x) ** 2))(p)
  g_ours = jax.grad(lambda p: jnp.sum(ours.apply(p, x) ** 2))(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g_ref, g_ours)


@pytest.mark.parametrize('stem,size,patch', [('hybrid', 64, 32), ('conv', 48, 16)])
def test_vit_stem_conv_matmul_is_the_same_model(stem, size, patch):
  x = jnp.asarray(np.random.RandomState(2).randn(2, size, size, 3), jnp.float32)
  a = vit.ViT(patch=patch, width=32, depth=1, num_heads=2, stem=stem)
  b = vit.ViT(patch=patch, width=32, depth=1, num_heads=2, stem=stem, stem_conv='matmul')
  p = a.init(jax.random.PRNGKey(1), x)
  jax.tree.map(np.testing.assert_array_equal, p, b.init(jax.random.PRNGKey(1), x))
  np.testing.assert_allclose(b.apply(p, x), a.apply(p, x), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='model.image.stem_conv'):
    vit.ViT(patch=patch, width=32, depth=1, num_heads=2, stem=stem, stem_conv='fft').init(
        jax.random.PRNGKey(1), x)
