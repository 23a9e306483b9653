"""timm VisionTransformer checkpoints (ViT-B/16 layout, class token, DeiT without distillation)
and Hugging Face ViTModel checkpoints -> the ViT image tower (vlalign/models/vit.py)."""

import re
from typing import Mapping

import numpy as np

from vlalign.weights import common

Tensors = Mapping[str, np.ndarray]

# Hugging Face ViT names (both transformers 4's and 5's layouts) -> timm's.
_HF_RENAMES = [
    (r'^(vit\.)?embeddings\.cls_token$', 'cls_token'),
    (r'^(vit\.)?embeddings\.position_embeddings$', 'pos_embed'),
    (r'^(vit\.)?embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^(vit\.)?(encoder\.layer|layers)\.(\d+)\.', r'blocks.\3.'),
    (r'^(vit\.)?layernorm\.', 'norm.'),
    (r'\.layernorm_before\.', '.norm1.'), (r'\.layernorm_after\.', '.norm2.'),
    (r'\.attention\.attention\.(query|key|value)\.', r'.attn.\1.'),
    (r'\.attention\.(q|k|v)_proj\.', lambda m: f'.attn.{_QKV[m.group(1)]}.'),
    (r'\.attention\.(output\.dense|o_proj)\.', '.attn.proj.'),
    (r'\.intermediate\.dense\.', '.mlp.fc1.'), (r'\.output\.dense\.', '.mlp.fc2.'),
]
_QKV = {'q': 'query', 'k': 'key', 'v': 'value'}


def from_hf(t: Tensors) -> dict[str, np.ndarray]:
  """A Hugging Face ViTModel state dict renamed to timm's names (q/k/v stay separate)."""
  out = {}
  for name, value in t.items():
    for pattern, repl in _HF_RENAMES:
      name = re.sub(pattern, repl, name)
    out[name] = value
  return out


def _depth(t: Tensors) -> int:
  depth = 0
  while f'blocks.{depth}.norm1.weight' in t:
    depth += 1
  return depth


def _qkv(t: Tensors, s: str, d: str, heads: int) -> dict[str, np.ndarray]:
  """timm's packed qkv (or HF's separate query/key/value) as DenseGeneral [d, heads, hd]."""
  if f'{s}.attn.qkv.weight' in t:
    w, b = np.split(t[f'{s}.attn.qkv.weight'], 3), np.split(t[f'{s}.attn.qkv.bias'], 3)
  else:
    w = [t[f'{s}.attn.{n}.weight'] for n in ('query', 'key', 'value')]
    b = [t[f'{s}.attn.{n}.bias'] for n in ('query', 'key', 'value')]
  width = w[0].shape[1]
  out = {}
  for name, wi, bi in zip(('query', 'key', 'value'), w, b):
    out[f'{d}/attn/{name}/kernel'] = wi.T.reshape(width, heads, width // heads)
    out[f'{d}/attn/{name}/bias'] = bi.reshape(heads, width // heads)
  proj = t[f'{s}.attn.proj.weight']
  out[f'{d}/attn/out/kernel'] = proj.T.reshape(heads, width // heads, width)
  out[f'{d}/attn/out/bias'] = t[f'{s}.attn.proj.bias']
  return out


def image_params(t: Tensors, heads: int) -> dict[str, np.ndarray]:
  """ViT parameters ('patch_embed/kernel', 'encoder/block0/attn/query/kernel', ...)."""
  if 'patch_embed.proj.weight' not in t:
    raise common.WeightsError('not a timm / Hugging Face ViT checkpoint: no '
                              'patch_embed.proj.weight (nor embeddings.patch_embeddings)')
  out = {'patch_embed/kernel': common.conv(t['patch_embed.proj.weight']),
         'patch_embed/bias': t['patch_embed.proj.bias'], 'cls': t['cls_token'],
         'pos_embed': t['pos_embed']}
  for i in range(_depth(t)):
    s, d = f'blocks.{i}', f'encoder/block{i}'
    out.update(common.ln(t, f'{s}.norm1', f'{d}/ln1'))
    out.update(_qkv(t, s, d, heads))
    out.update(common.ln(t, f'{s}.norm2', f'{d}/ln2'))
    out.update(common.dense(t, f'{s}.mlp.fc1', f'{d}/mlp/fc1'))
    out.update(common.dense(t, f'{s}.mlp.fc2', f'{d}/mlp/fc2'))
  out.update(common.ln(t, 'norm', 'encoder/ln_final'))
  return out


def image_config(t: Tensors, hints: dict, ln_eps: float = 1e-6) -> tuple[dict, int]:
  """(config.model.image for the ViT with exact GELU, the checkpoint's image size); `hints`:
  a config.json with num_heads / num_attention_heads (default width / 64)."""
  width, _, patch, _ = t['patch_embed.proj.weight'].shape
  grid = int(round((t['pos_embed'].shape[-2] - 1) ** 0.5))
  heads = hints.get('num_heads', hints.get('num_attention_heads', max(1, width // 64)))
  mlp = t['blocks.0.mlp.fc1.weight'].shape[0]
  return ({'name': 'vit', 'patch': int(patch), 'width': int(width), 'depth': _depth(t),
           'num_heads': int(heads), 'mlp_ratio': mlp / width, 'pool': 'cls', 'stem': 'patch',
           'act': 'gelu', 'ln_eps': float(hints.get('layer_norm_eps', ln_eps)), 'dropout': 0.0},
          grid * int(patch))
