"""timm tf_efficientnet_b0..b7 checkpoints -> the EfficientNet tower (vlalign/models/
efficientnet.py), batch-norm statistics included.

Padding: the tower pads like TensorFlow's 'SAME' (more on the bottom/right when odd), which is
what timm's tf_ variants (Conv2dSame) and the original TF checkpoints do. Hugging Face's ALIGN
pads stride-2 convolutions with a fixed ZeroPad2d instead, so at some sizes its grids differ
(289 px: 9 x 9 at the end in HF, 10 x 10 here and in TF/timm); hf_align.py maps those with
model.image.padding='hf'.
"""

from typing import Mapping

import numpy as np

from vlalign.models import efficientnet
from vlalign.weights import common

Tensors = Mapping[str, np.ndarray]

# timm's names inside a block -> ours, for the depthwise-separable first stage (no expansion)
# and for the inverted-residual blocks.
_SEPARABLE = (('conv_dw', 'bn1', 'dw'), ('conv_pw', 'bn2', 'project'))
_INVERTED = (('conv_pw', 'bn1', 'expand'), ('conv_dw', 'bn2', 'dw'), ('conv_pwl', 'bn3', 'project'))


def _blocks(t: Tensors) -> list[str]:
  """timm's block prefixes ('blocks.<stage>.<i>') in network order."""
  out, stage = [], 0
  while f'blocks.{stage}.0.conv_dw.weight' in t:
    i = 0
    while f'blocks.{stage}.{i}.conv_dw.weight' in t:
      out.append(f'blocks.{stage}.{i}')
      i += 1
    stage += 1
  return out


def _conv_bn(t: Tensors, conv: str, bn: str, dst: str) -> dict[str, np.ndarray]:
  return {f'{dst}_conv/kernel': common.conv(t[f'{conv}.weight']),
          **common.batch_norm(t, bn, f'{dst}_bn')}


def image_params(t: Tensors) -> dict[str, np.ndarray]:
  """EfficientNet parameters and statistics (common.STATS names), the head when present."""
  if 'conv_stem.weight' not in t or 'blocks.0.0.conv_dw.weight' not in t:
    raise common.WeightsError('not a timm EfficientNet checkpoint: no conv_stem / blocks.0.0')
  out = _conv_bn(t, 'conv_stem', 'bn1', 'stem')
  for i, s in enumerate(_blocks(t)):
    names = _INVERTED if f'{s}.conv_pwl.weight' in t else _SEPARABLE
    for conv, bn, dst in names:
      out.update(_conv_bn(t, f'{s}.{conv}', f'{s}.{bn}', f'block{i}/{dst}'))
    for src, dst in (('conv_reduce', 'reduce'), ('conv_expand', 'expand')):
      out[f'block{i}/se/{dst}/kernel'] = common.conv(t[f'{s}.se.{src}.weight'])
      out[f'block{i}/se/{dst}/bias'] = t[f'{s}.se.{src}.bias']
  if 'conv_head.weight' in t:
    out.update(_conv_bn(t, 'conv_head', 'bn2', 'top'))
  if 'classifier.weight' in t:
    out.update(common.dense(t, 'classifier', 'classifier'))
  return out


def find_variant(stem: int, blocks: int) -> dict:
  """model.image fields (variant, or explicit coefficients for a scaled-down network) of the
  EfficientNet with this stem width and number of blocks."""
  for name, (width, depth, _, _) in efficientnet.VARIANTS.items():
    if (efficientnet.round_filters(efficientnet.STEM_WIDTH, width) == stem and
        len(efficientnet.block_specs(width, depth)) == blocks):
      return {'name': 'efficientnet', 'variant': name, 'include_top': False}
  for width in (0.25, 0.5, 0.75):
    for depth in (0.25, 0.5, 0.75, 1.0):
      if (efficientnet.round_filters(efficientnet.STEM_WIDTH, width) == stem and
          len(efficientnet.block_specs(width, depth)) == blocks):
        return {'name': 'efficientnet', 'variant': 'b0', 'include_top': False,
                'width_coefficient': width, 'depth_coefficient': depth}
  raise common.WeightsError(f'no EfficientNet variant has a {stem}-wide stem and {blocks} '
                            'blocks: set model.image yourself and use model.image.init_from')


def image_config(t: Tensors, hints: dict) -> tuple[dict, int]:
  """(config.model.image for EfficientNet without its head, as ALIGN uses it, 0 = no native
  size in the weights)."""
  del hints
  return find_variant(int(t['conv_stem.weight'].shape[0]), len(_blocks(t))), 0
