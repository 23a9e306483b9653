"""Hugging Face ALIGN checkpoints (AlignModel: EfficientNet vision model + BERT text model,
text projection with bias, temperature; or AlignVisionModel alone) -> the EfficientNet tower
with padding='hf' (HF's fixed stride-2 padding; see models/efficientnet.PADDINGS), the Bert
tower and the two-tower head."""

import math
from typing import Mapping

import numpy as np

from vlalign.weights import common, hf_bert, timm_effnet

Tensors = Mapping[str, np.ndarray]
PREFIX = 'vision_model.'


def is_align(t: Tensors) -> bool:
  """Whether the checkpoint holds an ALIGN vision model (alone or in AlignModel)."""
  return any(k.endswith('embeddings.convolution.weight') for k in t)


def _vision(t: Tensors) -> dict[str, np.ndarray]:
  return common.strip_prefix(t, (PREFIX,))


def _conv_bn(t: Tensors, conv: str, bn: str, dst: str) -> dict[str, np.ndarray]:
  return {f'{dst}_conv/kernel': common.conv(t[f'{conv}.weight']),
          **common.batch_norm(t, bn, f'{dst}_bn')}


def image_params(t: Tensors) -> dict[str, np.ndarray]:
  """EfficientNet parameters and statistics (common.STATS names) of the vision model."""
  t = _vision(t)
  out = _conv_bn(t, 'embeddings.convolution', 'embeddings.batchnorm', 'stem')
  i = 0
  while f'encoder.blocks.{i}.depthwise_conv.depthwise_conv.weight' in t:
    s, d = f'encoder.blocks.{i}', f'block{i}'
    if f'{s}.expansion.expand_conv.weight' in t:
      out.update(_conv_bn(t, f'{s}.expansion.expand_conv', f'{s}.expansion.expand_bn',
                          f'{d}/expand'))
    out.update(_conv_bn(t, f'{s}.depthwise_conv.depthwise_conv',
                        f'{s}.depthwise_conv.depthwise_norm', f'{d}/dw'))
    out.update(_conv_bn(t, f'{s}.projection.project_conv', f'{s}.projection.project_bn',
                        f'{d}/project'))
    for name in ('reduce', 'expand'):
      out[f'{d}/se/{name}/kernel'] = common.conv(t[f'{s}.squeeze_excite.{name}.weight'])
      out[f'{d}/se/{name}/bias'] = t[f'{s}.squeeze_excite.{name}.bias']
    i += 1
  return out


def image_config(t: Tensors, hints: dict) -> tuple[dict, int]:
  """(config.model.image: EfficientNet without head, padding='hf'; the config's image size)."""
  t = _vision(t)
  vision = hints.get('vision_config', hints)
  blocks = sum(1 for k in t if k.endswith('depthwise_conv.depthwise_conv.weight'))
  stem = int(t['embeddings.convolution.weight'].shape[0])
  image = timm_effnet.find_variant(stem, blocks)
  return {**image, 'padding': 'hf'}, int(vision.get('image_size', 0))


def model_params(t: Tensors) -> dict[str, np.ndarray]:
  """The whole AlignModel as vlalign variables: image tower, Bert text tower (no pooler:
  ALIGN embeds the [CLS] output), text projection with bias, log scale = -log temperature."""
  out = {common.place(k, 'image'): v for k, v in image_params(t).items()}
  text = hf_bert.text_params(t)
  out.update({common.place(k, 'text'): v for k, v in text.items()
              if not k.startswith('pooler/')})
  out.update({f'params/{k}': v for k, v in
              common.dense(t, 'text_projection', 'text_proj').items()})
  out['params/log_scale'] = np.float32(-math.log(float(t['temperature'])))
  return out
