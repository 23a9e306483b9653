"""Multi-head self-attention with 2-D projection kernels (simple to shard by rule), softmax in
float32 whatever the compute dtype."""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


class _Projection(nn.Module):
  """The kernel [d, d] and bias [d] of one projection, laid out like nn.Dense's parameters (so
  checkpoints and partition rules see query/kernel, query/bias, ...), returned rather than
  applied so that several projections can run as one matrix multiply."""
  features: int
  kernel_init: Callable

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    kernel = self.param('kernel', self.kernel_init, (in_features, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return kernel, bias


def _project(x: jnp.ndarray, projections: list, dtype) -> list[jnp.ndarray]:
  """x @ [W_1 | W_2 | ...] + [b_1 | b_2 | ...] as one matmul, split back per projection."""
  kernels, biases = zip(*projections)
  kernel = jnp.concatenate(kernels, axis=1).astype(dtype)
  bias = jnp.concatenate(biases).astype(dtype)
  y = jnp.dot(x.astype(dtype), kernel) + bias
  return jnp.split(y, len(projections), axis=-1)


class SelfAttention(nn.Module):
  """Self-attention over [n, L, d]; `mask` is [n, 1, L, L] boolean (True = attend)."""
  num_heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None,
               train: bool = False, queries: jnp.ndarray | None = None) -> jnp.ndarray:
    """`queries` [n, Lq, d] (default: x itself) attend over x; mask is [n, 1, Lq, L]."""
    n, _, width = x.shape
    if width % self.num_heads:
      raise ValueError(f'width {width} is not divisible by num_heads={self.num_heads}')
    head_dim = width // self.num_heads
    split = lambda t: t.reshape(n, t.shape[1], self.num_heads, head_dim)
    wq, wk, wv = (_Projection(width, self.kernel_init, name=name)(width)
                  for name in ('query', 'key', 'value'))
    if queries is None:  # one [d, 3d] matmul for q, k and v
      q, k, v = (split(t) for t in _project(x, [wq, wk, wv], self.dtype))
    else:
      q, = (split(t) for t in _project(queries, [wq], self.dtype))
      k, v = (split(t) for t in _project(x, [wk, wv], self.dtype))
    logits = jnp.einsum('nqhd,nkhd->nhqk', q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
    out = jnp.einsum('nhqk,nkhd->nqhd', weights, v).reshape(n, q.shape[1], width)
    return nn.Dense(width, dtype=self.dtype, kernel_init=self.kernel_init, name='out')(out)


def text_positions(tokens: jnp.ndarray, pad_id: int, eos_id: int | None = None) -> jnp.ndarray:
  """bool [n, L]: the positions that hold text. With `eos_id` (tokenizers whose pad id is also a
  real token, such as CLIP's BPE, where id 0 is '!'), every position up to and including the
  first end token; otherwise every position whose id is not `pad_id`."""
  if eos_id is None:
    return tokens != pad_id
  is_eos = (tokens == eos_id).astype(jnp.int32)
  return (jnp.cumsum(is_eos, axis=1) - is_eos) == 0
