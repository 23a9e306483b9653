"""EfficientNet: exact parameter counts (docs/METHODS.md, Oracles), FLOPs, and a numeric
forward pass."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.util import count_params, image_flops
from vlalign.models import efficientnet
from vlalign.models.efficientnet import EfficientNet


@pytest.mark.parametrize('variant,want', [
    ('b0', 3_595_388), ('b3', 10_103_336), ('b5', 27_288_112), ('b7', 62_143_440),
    ('l2', 467_219_796)])
def test_no_top_param_counts(variant, want):
  assert count_params(EfficientNet(variant), (1, 32, 32, 3)) == want


def test_b7_full_classifier_param_count():
  assert count_params(EfficientNet('b7', include_top=True), (1, 32, 32, 3)) == 66_347_960


def test_embedding_width_is_last_stage_width():
  for variant, width in (('b7', 640), ('l2', 1376)):
    out = jax.eval_shape(lambda x, m=EfficientNet(variant): m.init_with_output(
        jax.random.PRNGKey(0), x)[0], jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
    assert out.shape == (2, width)


def test_b7_flops_at_289px_match_oracle():
  flops = image_flops(EfficientNet('b7'), 289)
  assert abs(flops / 19.49e9 - 1) < 0.05, flops


def test_round_filters_and_repeats():
  assert efficientnet.round_filters(32, 4.3) == 136
  assert efficientnet.round_filters(320, 4.3) == 1376
  assert efficientnet.round_repeats(3, 3.1) == 10
  assert len(efficientnet.block_specs(2.0, 3.1)) == 55


def test_tiny_forward_is_finite_input_dependent_and_updates_batch_stats():
  model = EfficientNet('b0', width_coefficient=0.25, depth_coefficient=0.3)
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.uniform(-1, 1, (4, 33, 33, 3)), jnp.float32)  # odd size: SAME padding
  # The rbg PRNG compiles much faster on CPU than threefry for many parameters.
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  assert set(variables) == {'params', 'batch_stats'}
  out, new = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'],
                                               rngs={'dropout': jax.random.PRNGKey(1)}))(
                                                   variables, x)
  assert out.shape == (4, efficientnet.round_filters(320, 0.25))
  assert np.isfinite(np.asarray(out)).all()
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new['batch_stats'],
                       variables['batch_stats'])
  assert max(jax.tree.leaves(moved)) > 0
  apply = jax.jit(model.apply)
  ev, ev2 = apply(variables, x), apply(variables, x[::-1])
  assert np.isfinite(np.asarray(ev)).all()
  np.testing.assert_allclose(np.asarray(ev2), np.asarray(ev)[::-1], rtol=1e-5, atol=1e-6)
  # Different inputs, different outputs (relative: running statistics at init leave eval-mode
  # activations small).
  assert float(jnp.abs(ev[0] - ev[1]).max()) > 0.1 * float(jnp.abs(ev).max())
  assert float(jnp.abs(out[0] - out[1]).max()) > 0.1



def test_first_block_of_a_stage_skips_only_with_tf_rule():
  """Width 0.25 keeps stage 0 at 8 channels (stride 1): TF / timm add the residual there,
  HF's AlignVisionBlock (padding='hf') never does on a stage's first block."""
  x = jnp.asarray(np.random.RandomState(0).normal(size=(1, 16, 16, 3)), jnp.float32)
  for padding, first_skips in (('same', True), ('hf', False)):
    seen = {}

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, efficientnet.MBConv):
        seen[context.module.name] = context.module.residual
      return next_fun(*args, **kwargs)
    net = EfficientNet('b0', width_coefficient=0.25, depth_coefficient=0.5, padding=padding)
    with nn.intercept_methods(record):
      jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
    firsts = [s['first'] for s in efficientnet.block_specs(0.25, 0.5)]
    assert [seen[f'block{i}'] for i in range(len(firsts))] == [
        first_skips or not f for f in firsts]
  block = efficientnet.MBConv(8, 3, 1, 1, residual=False)
  y = jnp.ones((1, 4, 4, 8))
  shapes = jax.eval_shape(block.init, jax.random.PRNGKey(0), y)  # no initialiser to compile
  variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype), shapes)
  variables['params']['project_bn'] = jax.tree.map(jnp.zeros_like,
                                                   variables['params']['project_bn'])
  np.testing.assert_array_equal(block.apply(variables, y), jnp.zeros_like(y))  # no skip
  np.testing.assert_array_equal(block.clone(residual=True).apply(variables, y), y)
