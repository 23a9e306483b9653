"""OpenCLIP / OpenAI CLIP checkpoints (ViT image tower + causal text transformer) -> ClipViT
and ClipText (vlalign/models/clip.py) parameters and tower configs."""

from typing import Mapping

import numpy as np

from vlalign.weights import common

Tensors = Mapping[str, np.ndarray]


def _attention(t: Tensors, src: str, dst: str) -> dict[str, np.ndarray]:
  """nn.MultiheadAttention's packed in_proj ([3d, d]) as query/key/value/out Dense kernels."""
  w, b = t[f'{src}.in_proj_weight'], t[f'{src}.in_proj_bias']
  d = w.shape[1]
  out = {}
  for i, name in enumerate(('query', 'key', 'value')):
    out[f'{dst}/{name}/kernel'] = w[i * d:(i + 1) * d].T
    out[f'{dst}/{name}/bias'] = b[i * d:(i + 1) * d]
  out.update(common.dense(t, f'{src}.out_proj', f'{dst}/out'))
  return out


def _depth(t: Tensors, prefix: str) -> int:
  depth = 0
  while f'{prefix}.resblocks.{depth}.ln_1.weight' in t:
    depth += 1
  return depth


def _blocks(t: Tensors, src: str, dst: str) -> dict[str, np.ndarray]:
  out = {}
  for i in range(_depth(t, src)):
    s, d = f'{src}.resblocks.{i}', f'{dst}/block{i}'
    out.update(common.ln(t, f'{s}.ln_1', f'{d}/ln_1'))
    out.update(_attention(t, f'{s}.attn', f'{d}/attn'))
    out.update(common.ln(t, f'{s}.ln_2', f'{d}/ln_2'))
    out.update(common.dense(t, f'{s}.mlp.c_fc', f'{d}/fc1'))
    out.update(common.dense(t, f'{s}.mlp.c_proj', f'{d}/fc2'))
  return out


def _model_cfg(hints: dict) -> dict:
  """open_clip's model config from an open_clip_config.json ({'model_cfg': ...}) or a bare one."""
  return hints.get('model_cfg', hints)


def _act(hints: dict) -> str:
  return 'quick_gelu' if _model_cfg(hints).get('quick_gelu', False) else 'gelu'


def _conv_bn(t: Tensors, conv: str, bn: str, dst_conv: str, dst_bn: str) -> dict:
  return {f'{dst_conv}/kernel': common.conv(t[f'{conv}.weight']),
          **common.batch_norm(t, bn, dst_bn)}


def resnet_params(t: Tensors) -> dict[str, np.ndarray]:
  """ModifiedResNet parameters and batch-norm statistics (common.STATS names)."""
  out = {}
  for i in (1, 2, 3):
    out.update(_conv_bn(t, f'visual.conv{i}', f'visual.bn{i}', f'stem_conv{i}', f'stem_bn{i}'))
  stage = 1
  while f'visual.layer{stage}.0.conv1.weight' in t:
    i = 0
    while f'visual.layer{stage}.{i}.conv1.weight' in t:
      s, d = f'visual.layer{stage}.{i}', f'layer{stage}_{i}'
      for j in (1, 2, 3):
        out.update(_conv_bn(t, f'{s}.conv{j}', f'{s}.bn{j}', f'{d}/conv{j}', f'{d}/bn{j}'))
      if f'{s}.downsample.0.weight' in t:
        out.update(_conv_bn(t, f'{s}.downsample.0', f'{s}.downsample.1', f'{d}/down_conv',
                            f'{d}/down_bn'))
      i += 1
    stage += 1
  a = 'visual.attnpool'
  out['attnpool/pos_embed'] = t[f'{a}.positional_embedding']
  for src, dst in (('q_proj', 'query'), ('k_proj', 'key'), ('v_proj', 'value'), ('c_proj', 'out')):
    out.update(common.dense(t, f'{a}.{src}', f'attnpool/{dst}'))
  return out


def resnet_config(t: Tensors, hints: dict) -> tuple[dict, int]:
  """(config.model.image for ModifiedResNet, the checkpoint's image size)."""
  layers, stage = [], 1
  while f'visual.layer{stage}.0.conv1.weight' in t:
    layers.append(sum(1 for k in t if k.startswith(f'visual.layer{stage}.')
                      and k.endswith('.conv1.weight')))
    stage += 1
  width = int(t['visual.layer1.0.conv1.weight'].shape[0])
  vision = _model_cfg(hints).get('vision_cfg', {})
  grid = int(round((t['visual.attnpool.positional_embedding'].shape[0] - 1) ** 0.5))
  return ({'name': 'clip_resnet', 'layers': tuple(layers), 'width': width,
           'output_dim': int(t['visual.attnpool.c_proj.weight'].shape[0]),
           'num_heads': width * 32 // vision.get('head_width', 64)}, grid * 32)


def is_resnet(t: Tensors) -> bool:
  """Whether the checkpoint's image tower is the modified ResNet (RN50, RN101, ...)."""
  return 'visual.layer1.0.conv1.weight' in t


def image_params(t: Tensors) -> dict[str, np.ndarray]:
  """ClipViT (or, for a ResNet checkpoint, ModifiedResNet) variables from an open_clip state
  dict, names relative to the tower."""
  if is_resnet(t):
    return resnet_params(t)
  if 'visual.conv1.weight' not in t:
    raise common.WeightsError('not an OpenCLIP ViT or ResNet checkpoint: no visual.conv1.weight '
                              '(timm-backed towers are not mapped)')
  out = {'patch_embed/kernel': common.conv(t['visual.conv1.weight']),
         'cls': t['visual.class_embedding'], 'pos_embed': t['visual.positional_embedding'],
         'proj/kernel': t['visual.proj']}
  out.update(common.ln(t, 'visual.ln_pre', 'ln_pre'))
  out.update(common.ln(t, 'visual.ln_post', 'ln_post'))
  out.update(_blocks(t, 'visual.transformer', 'transformer'))
  return out


def text_params(t: Tensors) -> dict[str, np.ndarray]:
  """ClipText parameters from an open_clip state dict."""
  out = {'token_embed/embedding': t['token_embedding.weight'],
         'pos_embed': t['positional_embedding'], 'proj/kernel': t['text_projection']}
  out.update(common.ln(t, 'ln_final', 'ln_final'))
  out.update(_blocks(t, 'transformer', 'transformer'))
  return out


def image_config(t: Tensors, hints: dict) -> tuple[dict, int]:
  """(config.model.image for ClipViT or ModifiedResNet, the checkpoint's image size)."""
  if is_resnet(t):
    return resnet_config(t, hints)
  vision = _model_cfg(hints).get('vision_cfg', {})
  width, _, patch, _ = t['visual.conv1.weight'].shape
  grid = int(round((t['visual.positional_embedding'].shape[0] - 1) ** 0.5))
  heads = width // vision.get('head_width', 64)
  return ({'name': 'clip_vit', 'patch': int(patch), 'width': int(width),
           'depth': _depth(t, 'visual.transformer'), 'num_heads': int(heads),
           'output_dim': int(t['visual.proj'].shape[1]), 'act': _act(hints)}, grid * patch)


def text_config(t: Tensors, hints: dict) -> tuple[dict, int, int]:
  """(config.model.text for ClipText with open_clip's end-of-text pooling, vocabulary size,
  context length)."""
  text = _model_cfg(hints).get('text_cfg', {})
  vocab, width = t['token_embedding.weight'].shape
  return ({'name': 'clip_text', 'width': int(width), 'depth': _depth(t, 'transformer'),
           'num_heads': int(text.get('heads', width // 64)),
           'output_dim': int(t['text_projection'].shape[1]), 'act': _act(hints),
           'pool': 'eot'}, int(vocab), int(t['positional_embedding'].shape[0]))


def model_params(t: Tensors) -> dict[str, np.ndarray]:
  """The whole two-tower model's variables ('params/...', 'batch_stats/...'; the towers end
  in their own projections)."""
  out = {common.place(k, 'image'): v for k, v in image_params(t).items()}
  out.update({common.place(k, 'text'): v for k, v in text_params(t).items()})
  out['params/log_scale'] = np.asarray(t['logit_scale'], np.float32).reshape(())
  return out
