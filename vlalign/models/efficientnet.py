"""EfficientNet B0-B7 and L2 image towers (Tan & Le 2019; L2 from Xie et al. 2020).

MBConv blocks (1x1 expansion, depthwise conv, squeeze-excitation with ratio 0.25 of the block's
input width, 1x1 projection), swish activations, stochastic depth on residual blocks, TF 'SAME'
padding, batch norm (momentum 0.99, epsilon 1e-3) with running statistics in the `batch_stats`
collection. Under jit with a batch sharded over devices the statistics are taken over the
global batch (the mean is a global reduction in the jitted program).

`include_top=False` (the ALIGN tower) ends with global average pooling of the last MBConv stage:
the embedding width is that stage's width (320 * width coefficient, rounded: 640 for B7, 1376 for
L2). `include_top=True` adds the 1x1 top conv (1280 * width), pooling, dropout and a classifier.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# name -> (width coefficient, depth coefficient, native resolution, classifier dropout)
VARIANTS = {
    'b0': (1.0, 1.0, 224, 0.2), 'b1': (1.0, 1.1, 240, 0.2), 'b2': (1.1, 1.2, 260, 0.3),
    'b3': (1.2, 1.4, 300, 0.3), 'b4': (1.4, 1.8, 380, 0.4), 'b5': (1.6, 2.2, 456, 0.4),
    'b6': (1.8, 2.6, 528, 0.5), 'b7': (2.0, 3.1, 600, 0.5), 'l2': (4.3, 5.3, 800, 0.5),
}

# The B0 stages: (kernel, stride, expand ratio, input width, output width, repeats).
STAGES = (
    (3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1),
)
STEM_WIDTH, TOP_WIDTH, SE_RATIO = 32, 1280, 0.25
BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3
# model.image.padding of the stem and the stride-2 depthwise convolutions: TF's 'same' (more
# padding bottom/right when the total is odd: TF and timm checkpoints) or 'hf', Hugging Face
# ALIGN's fixed (k // 2 - 1, k // 2) zero padding before a VALID convolution. They agree on even
# sizes; at 289 px the last grid is 10 x 10 with 'same', 9 x 9 with 'hf'. 'hf' also follows
# AlignVisionBlock's residual rule: never on the first block of a stage (TF and timm add it
# wherever stride is 1 and the width is kept; the two differ only in scaled-down networks, e.g.
# width 0.25, whose stage 0 keeps 8 channels).
PADDINGS = ('same', 'hf')


def _padding(kernel: int, stride: int, padding: str):
  """The flax padding of a k x k convolution with this stride under a PADDINGS convention."""
  if padding not in PADDINGS:
    raise ValueError(f'model.image.padding must be one of {PADDINGS}, got {padding!r}')
  if padding == 'same' or stride == 1:
    return 'SAME'
  return ((kernel // 2 - 1, kernel // 2),) * 2

conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'truncated_normal')
# A depthwise kernel is [k, k, 1, C]: each output sees k*k inputs, so scale by fan-in.
depthwise_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Channel count scaled by `width`, rounded to a multiple of `divisor`, never below 90%."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
  """Number of blocks of a stage scaled by `depth` (rounded up)."""
  return int(math.ceil(depth * repeats))


def embedding_width(variant: str, width_coefficient: float = 0.0) -> int:
  """Width of the pooled features without the top conv (the last MBConv stage's width)."""
  return round_filters(STAGES[-1][4], width_coefficient or VARIANTS[variant][0])


def block_specs(width: float, depth: float) -> list[dict]:
  """Every MBConv block of the network in order: kernel, stride, expand, in/out widths, whether
  it is the first of its stage."""
  specs = []
  for kernel, stride, expand, w_in, w_out, repeats in STAGES:
    w_in, w_out = round_filters(w_in, width), round_filters(w_out, width)
    for i in range(round_repeats(repeats, depth)):
      specs.append(dict(kernel=kernel, stride=stride if i == 0 else 1, expand=expand,
                        w_in=w_in if i == 0 else w_out, w_out=w_out, first=i == 0))
  return specs


def _bn(train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      dtype=dtype, name=name)


class SqueezeExcite(nn.Module):
  """Channel gating: global pool -> 1x1 reduce + swish -> 1x1 expand + sigmoid -> scale."""
  reduced: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.swish(nn.Conv(self.reduced, (1, 1), kernel_init=conv_init, dtype=self.dtype,
                         name='reduce')(s))
    s = nn.Conv(x.shape[-1], (1, 1), kernel_init=conv_init, dtype=self.dtype, name='expand')(s)
    return x * nn.sigmoid(s)


class MBConv(nn.Module):
  """Inverted-residual block with squeeze-excitation and stochastic depth."""
  w_out: int
  kernel: int
  stride: int
  expand: int
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32
  padding: str = 'same'  # one of PADDINGS
  residual: bool = True  # False: no skip connection even where the shapes allow one

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    w_in = x.shape[-1]
    y = x
    if self.expand != 1:
      y = nn.Conv(w_in * self.expand, (1, 1), use_bias=False, kernel_init=conv_init,
                  dtype=self.dtype, name='expand_conv')(y)
      y = nn.swish(_bn(train, self.dtype, 'expand_bn')(y))
    width = y.shape[-1]
    y = nn.Conv(width, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                padding=_padding(self.kernel, self.stride, self.padding),
                feature_group_count=width, use_bias=False, kernel_init=depthwise_init,
                dtype=self.dtype, name='dw_conv')(y)
    y = nn.swish(_bn(train, self.dtype, 'dw_bn')(y))
    y = SqueezeExcite(max(1, int(w_in * SE_RATIO)), self.dtype, name='se')(y)
    y = nn.Conv(self.w_out, (1, 1), use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                name='project_conv')(y)
    y = _bn(train, self.dtype, 'project_bn')(y)
    if self.residual and self.stride == 1 and w_in == self.w_out:
      # Stochastic depth: drop the whole residual branch per example.
      y = nn.Dropout(self.drop_path, broadcast_dims=(1, 2, 3), deterministic=not train)(y)
      y = y + x
    return y


class EfficientNet(nn.Module):
  """EfficientNet image tower; returns pooled features [n, C] (or logits with include_top).

  width_coefficient / depth_coefficient of 0 take the variant's; set them to build a
  scaled-down member of the family (e.g. for CPU runs).
  """
  variant: str = 'b0'
  include_top: bool = False
  num_classes: int = 1000
  width_coefficient: float = 0.0
  depth_coefficient: float = 0.0
  drop_path_rate: float = 0.2
  dropout: float = -1.0  # classifier dropout (include_top only); -1 takes the variant's
  padding: str = 'same'  # stride-2 convolutions' padding: one of PADDINGS
  dtype: Dtype = jnp.float32
  remat: bool = False

  def coefficients(self) -> tuple[float, float]:
    """(width, depth) coefficients in use."""
    if self.variant not in VARIANTS:
      raise ValueError(f'model.image.variant must be one of {sorted(VARIANTS)}, '
                       f'got {self.variant!r}')
    width, depth = VARIANTS[self.variant][:2]
    return self.width_coefficient or width, self.depth_coefficient or depth

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    width, depth = self.coefficients()
    x = nn.Conv(round_filters(STEM_WIDTH, width), (3, 3), strides=(2, 2),
                padding=_padding(3, 2, self.padding),
                use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                name='stem_conv')(images.astype(self.dtype))
    x = nn.swish(_bn(train, self.dtype, 'stem_bn')(x))
    block = nn.remat(MBConv, static_argnums=(2,)) if self.remat else MBConv
    specs = block_specs(width, depth)
    for i, spec in enumerate(specs):
      residual = not (self.padding == 'hf' and spec['first'])  # HF ALIGN's rule (PADDINGS)
      x = block(spec['w_out'], spec['kernel'], spec['stride'], spec['expand'],
                self.drop_path_rate * i / len(specs), self.dtype, self.padding, residual,
                name=f'block{i}')(x, train)
    if self.include_top:
      x = nn.Conv(round_filters(TOP_WIDTH, width), (1, 1), use_bias=False, kernel_init=conv_init,
                  dtype=self.dtype, name='top_conv')(x)
      x = nn.swish(_bn(train, self.dtype, 'top_bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    if not self.include_top:
      return x
    rate = VARIANTS[self.variant][3] if self.dropout < 0 else self.dropout
    x = nn.Dropout(rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x)
