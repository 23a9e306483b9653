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


def image_params(t: Tensors) -> dict[str, np.ndarray]:
  """ClipViT parameters ('patch_embed/kernel', ...) from an open_clip state dict."""
  if 'visual.conv1.weight' not in t:
    raise common.WeightsError('not an OpenCLIP ViT checkpoint: no visual.conv1.weight '
                              '(ResNet and timm-backed towers are not mapped)')
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
  """(config.model.image for ClipViT, the checkpoint's image size)."""
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
  """The whole two-tower model's parameters (towers end in their own projections)."""
  out = {f'image_tower/{k}': v for k, v in image_params(t).items()}
  out.update({f'text_tower/{k}': v for k, v in text_params(t).items()})
  out['log_scale'] = np.asarray(t['logit_scale'], np.float32).reshape(())
  return out
