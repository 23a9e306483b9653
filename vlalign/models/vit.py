"""Vision Transformer image tower (pre-LN, [CLS] or mean pooling)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


class MlpBlock(nn.Module):
  """Transformer feed-forward block: Dense -> GELU -> Dense."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(x)
    x = nn.gelu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(width, dtype=self.dtype, name='fc2')(x)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block; `mask` is [batch, 1, q, k] boolean (True = attend)."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    y = nn.LayerNorm(dtype=self.dtype, name='ln1')(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout,
        deterministic=not train, name='attn')(y, y, mask=mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(dtype=self.dtype, name='ln2')(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, name='mlp')(y, train)
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class Encoder(nn.Module):
  """A stack of pre-LN blocks followed by a final LayerNorm."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    block = nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat else EncoderBlock
    for i in range(self.depth):
      x = block(self.num_heads, self.mlp_dim, self.dropout, self.dtype,
                name=f'block{i}')(x, mask, train)
    return nn.LayerNorm(dtype=self.dtype, name='ln_final')(x)


class ViT(nn.Module):
  """ViT image tower: patchify, [CLS] + learned positions, encoder, pooled features."""
  patch: int = 8
  width: int = 256
  depth: int = 6
  num_heads: int = 4
  mlp_ratio: float = 4.0
  pool: str = 'cls'
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                padding='VALID', dtype=self.dtype, name='patch_embed')(images.astype(self.dtype))
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)
    cls = self.param('cls', nn.initializers.zeros, (1, 1, c))
    x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)).astype(x.dtype), x], axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, h * w + 1, c))
    x = x + pos.astype(x.dtype)
    x = Encoder(self.depth, self.num_heads, int(self.width * self.mlp_ratio),
                self.dropout, self.dtype, self.remat, name='encoder')(x, None, train)
    if self.pool == 'cls':
      return x[:, 0]
    if self.pool == 'mean':
      return x[:, 1:].mean(axis=1)
    raise ValueError(f'model.image.pool must be "cls" or "mean", got {self.pool!r}')
