"""Multi-head self-attention with 2-D projection kernels (simple to shard by rule), softmax in
float32 whatever the compute dtype."""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


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
    n, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f'width {width} is not divisible by num_heads={self.num_heads}')
    head_dim = width // self.num_heads
    dense = lambda name: nn.Dense(width, dtype=self.dtype, kernel_init=self.kernel_init,
                                  name=name)
    split = lambda t: t.reshape(n, t.shape[1], self.num_heads, head_dim)
    queries = x if queries is None else queries
    q = split(dense('query')(queries))
    k, v = (split(dense(name)(x)) for name in ('key', 'value'))
    logits = jnp.einsum('nqhd,nkhd->nhqk', q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
    out = jnp.einsum('nhqk,nkhd->nqhd', weights, v).reshape(n, queries.shape[1], width)
    return dense('out')(out)
