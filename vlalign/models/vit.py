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


class ConvStem(nn.Module):
  """Stride-2 3x3 convolutions down to the patch grid, then a 1x1 projection to `width`
  (the convolutional stem of Xiao et al. 2021, "Early convolutions help transformers see
  better"); `patch` must be a power of two."""
  patch: int
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n_down = self.patch.bit_length() - 1
    if 2 ** n_down != self.patch:
      raise ValueError(f'model.image.stem="conv" needs a power-of-two patch, got {self.patch}')
    channels = max(self.width // 2 ** (n_down - 1), 16)
    for i in range(n_down):
      x = nn.Conv(channels, (3, 3), strides=(2, 2), padding='SAME', dtype=self.dtype,
                  name=f'conv{i}')(x)
      x = nn.LayerNorm(dtype=self.dtype, name=f'norm{i}')(x)
      x = nn.gelu(x)
      channels *= 2
    return nn.Conv(self.width, (1, 1), dtype=self.dtype, name='proj')(x)


class ViT(nn.Module):
  """ViT image tower: patchify (linear or conv stem), [CLS] + learned positions, encoder,
  pooled features."""
  patch: int = 8
  width: int = 256
  depth: int = 6
  num_heads: int = 4
  mlp_ratio: float = 4.0
  pool: str = 'cls'
  stem: str = 'patch'
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    images = images.astype(self.dtype)
    if self.stem == 'conv':
      x = ConvStem(self.patch, self.width, self.dtype, name='conv_stem')(images)
    elif self.stem == 'patch':
      x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                  padding='VALID', dtype=self.dtype, name='patch_embed')(images)
    else:
      raise ValueError(f'model.image.stem must be "patch" or "conv", got {self.stem!r}')
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
