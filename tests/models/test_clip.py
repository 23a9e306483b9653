"""CLIP towers: exact parameter counts (docs/METHODS.md, Oracles), FLOPs, causal [EOT] pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.util import count_params, image_flops
from vlalign.models.clip import ClipText, ClipViT
from vlalign.models.resnet_clip import ModifiedResNet


def test_vit_b32_and_b16_param_counts():
  assert count_params(ClipViT(patch=32), (1, 224, 224, 3)) == 87_849_216
  assert count_params(ClipViT(patch=16), (1, 224, 224, 3)) == 86_192_640


def test_text_transformer_param_count():
  assert count_params(ClipText(), (1, 77), jnp.int32) == 63_428_096


def test_rn50_param_count():
  # Released CLIP RN50 has 102,007,137 parameters; less its text side (63,428,096 - 262,144
  # + 512 x 1024 projection) and the logit scale, the image tower has 38,316,896.
  assert count_params(ModifiedResNet(), (1, 224, 224, 3)) == 38_316_896


def test_vit_b32_flops_match_oracle():
  # The architecture's FLOPs (every block over every token); pool_last_block skips ~1/12 of them.
  assert abs(image_flops(ClipViT(pool_last_block=False), 224) / 8.82e9 - 1) < 0.05


def test_text_is_causal_and_pooled_at_last_token():
  model = ClipText(vocab_size=40, max_len=8, width=32, depth=2, num_heads=2, output_dim=16)
  tokens = jnp.asarray([[1, 5, 6, 7, 2, 0, 0, 0], [1, 5, 6, 2, 0, 0, 0, 0]], jnp.int32)
  variables = jax.jit(model.init)(jax.random.key(0, impl='rbg'), tokens)
  apply = jax.jit(model.apply)
  out = np.asarray(apply(variables, tokens))
  assert out.shape == (2, 16) and np.isfinite(out).all()
  assert np.abs(out[0] - out[1]).max() > 1e-3
  # Causal: row 1's [EOT] (position 3) sees nothing after it, so cutting the padding off
  # changes nothing (a bidirectional model without a padding mask would differ).
  short = np.asarray(apply(variables, tokens[:, :4]))
  np.testing.assert_allclose(short[1], out[1], rtol=1e-5, atol=1e-6)
  earlier = np.asarray(apply(variables, tokens.at[0, 1].set(9)))
  assert np.abs(earlier[0] - out[0]).max() > 1e-3


def test_tiny_vit_and_resnet_forward_are_finite_and_input_dependent():
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  for model in (ClipViT(patch=8, width=32, depth=1, num_heads=2, output_dim=16),
                ModifiedResNet(layers=(1, 1, 1, 1), width=8, output_dim=16, num_heads=2)):
    variables = jax.jit(model.init)(jax.random.key(0, impl='rbg'), x)
    out = np.asarray(jax.jit(model.apply)(variables, x))
    assert out.shape == (2, 16) and np.isfinite(out).all()
    assert np.abs(out[0] - out[1]).max() > 1e-4


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
@pytest.mark.parametrize('tower', ['vit', 'text'])
def test_pooled_last_block_gives_the_full_towers_output_and_gradients(tower):
  """pool_last_block computes only the pooled row in the last block: same numbers, less work."""
  if tower == 'vit':
    make = lambda pool: ClipViT(patch=8, width=32, depth=2, num_heads=4, output_dim=16,
                                act='gelu', pool_last_block=pool)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 24, 24, 3))
  else:
    make = lambda pool: ClipText(vocab_size=50, max_len=10, width=32, depth=2, num_heads=4,
                                 output_dim=16, pool_last_block=pool)
    x = jnp.array([[5, 9, 3, 0, 0, 0, 0, 0], [7, 1, 2, 8, 4, 6, 2, 9], [3, 0, 0, 0, 0, 0, 0, 0]])
  full, pooled = make(False), make(True)
  params = full.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(pooled.init(jax.random.PRNGKey(0), x))
  np.testing.assert_allclose(pooled.apply(params, x), full.apply(params, x), rtol=1e-5,
                             atol=1e-5)
  loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, x)))
  g_full, g_pooled = jax.grad(loss(full))(params), jax.grad(loss(pooled))(params)
  for a, b in zip(jax.tree.leaves(g_pooled), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  flops = lambda m: jax.jit(m.apply).lower(params, x).compile().cost_analysis()['flops']
  assert flops(pooled) < 0.9 * flops(full)
