"""Helpers for model tests: parameter counts and FLOPs from abstract shapes (nothing allocated)."""

import jax
import jax.numpy as jnp
import numpy as np


def count_params(model, shape, dtype=jnp.float32) -> int:
  """Trainable parameters of `model` initialised on an input of `shape` (via eval_shape)."""
  x = jax.ShapeDtypeStruct(shape, dtype)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))


def image_flops(model, size: int) -> float:
  """Forward FLOPs of one image of size x size from XLA's cost analysis of the lowered program."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return float(jax.jit(model.apply).lower(variables, x).cost_analysis()['flops'])
