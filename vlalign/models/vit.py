"""Vision Transformer image tower (pre-LN, [CLS] or mean pooling)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# model.image.act: flax's default tanh-approximated GELU (vlalign's own runs), the exact erf
# GELU (timm, Hugging Face and PyTorch ViTs) or CLIP's QuickGELU x * sigmoid(1.702 x).
ACTIVATIONS = {'gelu_tanh': nn.gelu, 'gelu': lambda x: nn.gelu(x, approximate=False),
               'quick_gelu': lambda x: x * nn.sigmoid(1.702 * x)}


class MlpBlock(nn.Module):
  """Transformer feed-forward block: Dense -> GELU (one of ACTIVATIONS) -> Dense."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  act: str = 'gelu_tanh'

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(x)
    x = ACTIVATIONS[self.act](x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(width, dtype=self.dtype, name='fc2')(x)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block; `mask` is [batch, 1, q, k] boolean (True = attend)."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  act: str = 'gelu_tanh'
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    y = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln1')(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout,
        deterministic=not train, name='attn')(y, y, mask=mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln2')(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, self.act, name='mlp')(y, train)
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class Encoder(nn.Module):
  """A stack of pre-LN blocks followed by a final LayerNorm."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False
  act: str = 'gelu_tanh'
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False, return_levels: bool = False):
    """Final-normed outputs [n, L, width]; with `return_levels` also the [CLS] (position 0)
    output of every block, each through the same final LayerNorm: [n, depth, width]."""
    block = nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat else EncoderBlock
    norm = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln_final')
    levels = []
    for i in range(self.depth):
      x = block(self.num_heads, self.mlp_dim, self.dropout, self.dtype, self.act, self.ln_eps,
                name=f'block{i}')(x, mask, train)
      if return_levels:
        levels.append(x[:, 0])
    if not return_levels:
      return norm(x)
    return norm(x), norm(jnp.stack(levels, axis=1))


class StridedConv3x3(nn.Module):
  """A 3x3, stride-2, SAME-padded convolution computed as one matrix multiply over the nine
  strided shifts of the input (im2col by slicing). Same parameters (names, shapes and
  initialisers) and, up to float round-off, the same outputs as nn.Conv(features, (3, 3),
  strides=2, padding='SAME'). XLA:CPU runs the small-channel strided convolutions of the conv
  stem 1-12x slower than this form (docs/BENCHMARKS.md, "Demo step")."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (3, 3, c, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    x = x.astype(self.dtype)
    oh, ow = -(-h // 2), -(-w // 2)
    pad_h, pad_w = max(2 * oh + 1 - h, 0), max(2 * ow + 1 - w, 0)  # SAME: as lax computes it
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)))
    shifts = [jax.lax.slice(x, (0, dy, dx, 0), (n, dy + 2 * oh - 1, dx + 2 * ow - 1, c),
                            (1, 2, 2, 1)) for dy in range(3) for dx in range(3)]
    y = jnp.concatenate(shifts, axis=-1) @ kernel.reshape(9 * c, self.features).astype(self.dtype)
    return y + bias.astype(self.dtype)


class PatchifyMatmul(nn.Module):
  """A p x p, stride-p, VALID convolution as a reshape and one matmul: nn.Conv's parameters
  and, up to round-off, its outputs (about 3x faster on XLA:CPU for the hybrid stem)."""
  features: int
  patch: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape
    p = self.patch
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (p, p, c, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    gh, gw = h // p, w // p
    x = x[:, :gh * p, :gw * p].astype(self.dtype).reshape(n, gh, p, gw, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(n, gh, gw, p * p * c)
    return x @ kernel.reshape(p * p * c, self.features).astype(self.dtype) + bias.astype(
        self.dtype)


STEM_CONVS = ('xla', 'matmul')

# The 'hybrid' stem's first layer: a linear HYBRID_PATCHIFY x HYBRID_PATCHIFY patchify.
HYBRID_PATCHIFY = 4


class ConvStem(nn.Module):
  """Stride-2 3x3 convolutions down to the patch grid, then a 1x1 projection to `width`
  (the convolutional stem of Xiao et al. 2021, "Early convolutions help transformers see
  better"); `patch` must be a power of two. `patchify` > 1 (a power of two below `patch`)
  replaces the first log2(patchify) convolutions by one linear patchify x patchify, stride
  patchify projection (no norm) to the channels they would have produced: the same grid and
  widths, much cheaper where the resolution is highest (XLA:CPU runs small-channel 3x3
  convolutions slowly)."""
  patch: int
  width: int
  dtype: Dtype = jnp.float32
  patchify: int = 1
  conv_impl: str = 'xla'  # one of STEM_CONVS: lax's convolutions, or StridedConv3x3 and
  # PatchifyMatmul

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n_down = self.patch.bit_length() - 1
    if 2 ** n_down != self.patch:
      raise ValueError(f'model.image.stem="conv" needs a power-of-two patch, got {self.patch}')
    skip = self.patchify.bit_length() - 1
    if 2 ** skip != self.patchify or self.patchify >= self.patch:
      raise ValueError(f'the hybrid stem needs a power-of-two patchify below the patch '
                       f'({self.patch}), got {self.patchify}')
    channels = max(self.width // 2 ** (n_down - 1), 16)
    if self.conv_impl not in STEM_CONVS:
      raise ValueError(f'model.image.stem_conv must be one of {STEM_CONVS}, got '
                       f'{self.conv_impl!r}')
    if skip:
      if self.conv_impl == 'matmul':
        x = PatchifyMatmul(channels * 2 ** (skip - 1), self.patchify, self.dtype,
                           name='patchify')(x)
      else:
        x = nn.Conv(channels * 2 ** (skip - 1), (self.patchify, self.patchify),
                    strides=(self.patchify,) * 2, padding='VALID', dtype=self.dtype,
                    name='patchify')(x)
      x = nn.gelu(x)
      channels *= 2 ** skip
    for i in range(skip, n_down):
      if self.conv_impl == 'matmul':
        x = StridedConv3x3(channels, self.dtype, name=f'conv{i}')(x)
      else:
        x = nn.Conv(channels, (3, 3), strides=(2, 2), padding='SAME', dtype=self.dtype,
                    name=f'conv{i}')(x)
      x = nn.LayerNorm(dtype=self.dtype, name=f'norm{i}')(x)
      x = nn.gelu(x)
      channels *= 2
    return nn.Conv(self.width, (1, 1), dtype=self.dtype, name='proj')(x)


def drop_patches(x: jnp.ndarray, rate: float, rng: jax.Array) -> jnp.ndarray:
  """FLIP's patch dropout: x [n, 1 + P, c] ([CLS] first) -> [n, 1 + k, c], the [CLS] token and
  a uniformly random subset of k = max(1, int(P * (1 - rate))) patch tokens per example (kept
  in their original order)."""
  n, num = x.shape[0], x.shape[1] - 1
  k = max(1, int(num * (1.0 - rate)))
  noise = jax.random.uniform(rng, (n, num))
  keep = jnp.sort(jnp.argsort(noise, axis=1)[:, :k], axis=1)
  patches = jnp.take_along_axis(x[:, 1:], keep[:, :, None], axis=1)
  return jnp.concatenate([x[:, :1], patches], axis=1)


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
  stem_conv: str = 'xla'  # 'conv'/'hybrid' stems' 3x3 convolutions: one of STEM_CONVS
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False
  act: str = 'gelu_tanh'  # the encoder MLP's activation: one of ACTIVATIONS
  ln_eps: float = 1e-6  # the encoder's LayerNorm epsilon (flax's and timm's; HF ViT: 1e-12)
  patch_dropout: float = 0.0  # fraction of patch tokens dropped in training (FLIP)

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False, *, keep: jnp.ndarray | None = None,
               extra_tokens: jnp.ndarray | None = None, extra_valid: jnp.ndarray | None = None,
               return_levels: bool = False):
    """Pooled features [n, width]. Options used by methods (vlalign/methods/vicha.py), none of
    which adds parameters: `keep` [n, k] int: indices of the patch tokens to encode (MAE; the
    others are dropped after the position embedding); `extra_tokens` [n, m, width] (with
    `extra_valid` [n, m] bool) appended after the position embedding, so every block attends to
    them; `return_levels`: returns (pooled, {'levels': [n, depth, width] final-normed [CLS] of
    every block, 'tokens': final-normed outputs [n, 1 + patches (+ m), width]})."""
    images = images.astype(self.dtype)
    if self.stem in ('conv', 'hybrid'):
      patchify = HYBRID_PATCHIFY if self.stem == 'hybrid' else 1
      x = ConvStem(self.patch, self.width, self.dtype, patchify=patchify,
                   conv_impl=self.stem_conv, name='conv_stem')(images)
    elif self.stem == 'patch':
      x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                  padding='VALID', dtype=self.dtype, name='patch_embed')(images)
    else:
      raise ValueError(f'model.image.stem must be "patch", "conv" or "hybrid", got '
                       f'{self.stem!r}')
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)
    cls = self.param('cls', nn.initializers.zeros, (1, 1, c))
    x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)).astype(x.dtype), x], axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, h * w + 1, c))
    x = x + pos.astype(x.dtype)
    if keep is not None:  # [CLS] and the kept patch tokens, in the order of `keep`
      patches = jnp.take_along_axis(x[:, 1:], keep[:, :, None], axis=1)
      x = jnp.concatenate([x[:, :1], patches], axis=1)
    elif train and self.patch_dropout > 0:  # FLIP: a random subset per example, rng 'dropout'
      x = drop_patches(x, self.patch_dropout, self.make_rng('dropout'))
    num_patches = x.shape[1] - 1
    mask = None
    if extra_tokens is not None:
      x = jnp.concatenate([x, extra_tokens.astype(x.dtype)], axis=1)
      if extra_valid is not None:
        valid = jnp.concatenate([jnp.ones((n, num_patches + 1), bool), extra_valid], axis=1)
        mask = nn.make_attention_mask(valid, valid)
    if self.act not in ACTIVATIONS:
      raise ValueError(f'model.image.act must be one of {list(ACTIVATIONS)}, got {self.act!r}')
    encoder = Encoder(self.depth, self.num_heads, int(self.width * self.mlp_ratio),
                      self.dropout, self.dtype, self.remat, self.act, self.ln_eps,
                      name='encoder')
    levels = None
    if return_levels:
      x, levels = encoder(x, mask, train, return_levels=True)
    else:
      x = encoder(x, mask, train)
    if self.pool == 'cls':
      pooled = x[:, 0]
    elif self.pool == 'mean':
      pooled = x[:, 1:1 + num_patches].mean(axis=1)
    else:
      raise ValueError(f'model.image.pool must be "cls" or "mean", got {self.pool!r}')
    return (pooled, {'levels': levels, 'tokens': x}) if return_levels else pooled
