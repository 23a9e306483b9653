"""CLIP's modified ResNet image tower (Radford et al. 2021): a 3-conv stem with average pooling,
bottleneck blocks that downsample by average pooling before the stride (anti-aliasing), and
multi-head attention pooling over the final grid (query = the mean token) instead of global
average pooling. Defaults are CLIP RN50. Batch-norm statistics live in `batch_stats`."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5  # PyTorch's defaults (momentum 0.1 of the new value)


def _conv(features: int, kernel: int, dtype: Dtype, name: str) -> nn.Conv:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)), use_bias=False,
                 dtype=dtype, name=name)


def _bn(train: bool, dtype: Dtype, name: str, zero_init: bool = False) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      dtype=dtype, name=name,
                      scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones)


def _avg_pool(x: jnp.ndarray, stride: int) -> jnp.ndarray:
  return nn.avg_pool(x, (stride, stride), strides=(stride, stride)) if stride > 1 else x


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> avg-pool(stride) -> 1x1 (4x planes), with an avg-pool + 1x1 shortcut."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    out_width = 4 * self.planes
    y = nn.relu(_bn(train, self.dtype, 'bn1')(_conv(self.planes, 1, self.dtype, 'conv1')(x)))
    y = nn.relu(_bn(train, self.dtype, 'bn2')(_conv(self.planes, 3, self.dtype, 'conv2')(y)))
    y = _avg_pool(y, self.stride)
    y = _bn(train, self.dtype, 'bn3', zero_init=True)(_conv(out_width, 1, self.dtype, 'conv3')(y))
    if self.stride > 1 or x.shape[-1] != out_width:
      x = _conv(out_width, 1, self.dtype, 'down_conv')(_avg_pool(x, self.stride))
      x = _bn(train, self.dtype, 'down_bn')(x)
    return nn.relu(x + y)


class AttentionPool(nn.Module):
  """Attention pooling: the mean of the grid tokens queries [mean; grid] + positions."""
  num_heads: int
  output_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape
    if c % self.num_heads:
      raise ValueError(f'width {c} is not divisible by num_heads={self.num_heads}')
    x = x.reshape(n, h * w, c)
    x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(c ** -0.5), (h * w + 1, c))
    x = x + pos.astype(x.dtype)
    head_dim = c // self.num_heads
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, name=name)
    q = dense(c, 'query')(x[:, :1]).reshape(n, 1, self.num_heads, head_dim)
    k = dense(c, 'key')(x).reshape(n, h * w + 1, self.num_heads, head_dim)
    v = dense(c, 'value')(x).reshape(n, h * w + 1, self.num_heads, head_dim)
    logits = jnp.einsum('nqhd,nkhd->nhqk', q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('nhqk,nkhd->nqhd', weights, v).reshape(n, c)
    return dense(self.output_dim, 'out')(out)


class ModifiedResNet(nn.Module):
  """CLIP modified ResNet; returns attention-pooled features [n, output_dim].

  layers=(3, 4, 6, 3), width=64, output_dim=1024, num_heads=32 is RN50; the position table of
  the attention pool has (image_size / 32)^2 + 1 entries, fixed by the input used at init.
  """
  layers: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  output_dim: int = 1024
  num_heads: int = 32
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = images.astype(self.dtype)
    for i, (features, stride) in enumerate(((self.width // 2, 2), (self.width // 2, 1),
                                            (self.width, 1))):
      conv = nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                     use_bias=False, dtype=self.dtype, name=f'stem_conv{i + 1}')
      x = nn.relu(_bn(train, self.dtype, f'stem_bn{i + 1}')(conv(x)))
    x = _avg_pool(x, 2)
    block = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
    for stage, repeats in enumerate(self.layers):
      for i in range(repeats):
        stride = 2 if stage > 0 and i == 0 else 1
        x = block(self.width * 2 ** stage, stride, self.dtype,
                  name=f'layer{stage + 1}_{i}')(x, train)
    return AttentionPool(self.num_heads, self.output_dim, self.dtype, name='attnpool')(x)
