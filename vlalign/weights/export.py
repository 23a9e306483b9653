"""vlalign parameters -> reference-library state dicts and configs (the inverse of openclip.py
and hf_bert.py): OpenCLIP ViT models (both towers, logit scale) and the BERT text tower."""

from typing import Mapping

import numpy as np

from vlalign.weights import common

Params = Mapping[str, np.ndarray]  # flat 'a/b/c' names relative to a tower (or the model)


def _ln(p: Params, src: str, dst: str) -> dict[str, np.ndarray]:
  return {f'{dst}.weight': p[f'{src}/scale'], f'{dst}.bias': p[f'{src}/bias']}


def _dense(p: Params, src: str, dst: str) -> dict[str, np.ndarray]:
  return {f'{dst}.weight': np.ascontiguousarray(p[f'{src}/kernel'].T),
          f'{dst}.bias': p[f'{src}/bias']}


def _depth(p: Params, pattern: str) -> int:
  depth = 0
  while pattern.format(depth) in p:
    depth += 1
  return depth


def _clip_blocks(p: Params, src: str, dst: str) -> dict[str, np.ndarray]:
  out = {}
  for i in range(_depth(p, src + '/block{}/ln_1/scale')):
    s, d = f'{src}/block{i}', f'{dst}.resblocks.{i}'
    out.update(_ln(p, f'{s}/ln_1', f'{d}.ln_1'))
    qkv = ('query', 'key', 'value')
    out[f'{d}.attn.in_proj_weight'] = np.concatenate([p[f'{s}/attn/{n}/kernel'].T for n in qkv])
    out[f'{d}.attn.in_proj_bias'] = np.concatenate([p[f'{s}/attn/{n}/bias'] for n in qkv])
    out.update(_dense(p, f'{s}/attn/out', f'{d}.attn.out_proj'))
    out.update(_ln(p, f'{s}/ln_2', f'{d}.ln_2'))
    out.update(_dense(p, f'{s}/fc1', f'{d}.mlp.c_fc'))
    out.update(_dense(p, f'{s}/fc2', f'{d}.mlp.c_proj'))
  return out


def openclip_state(params: Params) -> dict[str, np.ndarray]:
  """An open_clip CLIP state dict from a vlalign model with clip_vit and clip_text towers."""
  img = {k[len('image_tower/'):]: v for k, v in params.items() if k.startswith('image_tower/')}
  txt = {k[len('text_tower/'):]: v for k, v in params.items() if k.startswith('text_tower/')}
  if 'patch_embed/kernel' not in img or 'token_embed/embedding' not in txt:
    raise common.WeightsError('export to openclip needs clip_vit and clip_text towers')
  out = {'visual.conv1.weight': np.ascontiguousarray(img['patch_embed/kernel'].transpose(
      3, 2, 0, 1)), 'visual.class_embedding': img['cls'],
         'visual.positional_embedding': img['pos_embed'], 'visual.proj': img['proj/kernel'],
         'token_embedding.weight': txt['token_embed/embedding'],
         'positional_embedding': txt['pos_embed'], 'text_projection': txt['proj/kernel'],
         'logit_scale': np.asarray(params['log_scale'], np.float32)}
  out.update(_ln(img, 'ln_pre', 'visual.ln_pre'))
  out.update(_ln(img, 'ln_post', 'visual.ln_post'))
  out.update(_clip_blocks(img, 'transformer', 'visual.transformer'))
  out.update(_ln(txt, 'ln_final', 'ln_final'))
  out.update(_clip_blocks(txt, 'transformer', 'transformer'))
  return out


def openclip_config(model_cfg, image_size: int, max_len: int) -> dict:
  """open_clip_config.json ({'model_cfg': ...}) for the exported model."""
  img, txt = model_cfg.image, model_cfg.text
  return {'model_cfg': {
      'embed_dim': int(model_cfg.embed_dim), 'quick_gelu': img.get('act') == 'quick_gelu',
      'vision_cfg': {'layers': img.depth, 'width': img.width, 'patch_size': img.patch,
                     'head_width': img.width // img.num_heads, 'image_size': image_size},
      'text_cfg': {'context_length': max_len, 'vocab_size': int(model_cfg.vocab_size),
                   'width': txt.width, 'heads': txt.num_heads, 'layers': txt.depth}}}


def bert_state(params: Params) -> dict[str, np.ndarray]:
  """A transformers BertModel state dict from a Bert text tower's parameters."""
  e = 'embeddings'
  out = {f'{e}.word_embeddings.weight': params['token_embed/embedding'],
         f'{e}.position_embeddings.weight': params['pos_embed/embedding'],
         f'{e}.token_type_embeddings.weight': params['type_embed/embedding']}
  out.update(_ln(params, 'ln_embed', f'{e}.LayerNorm'))
  for i in range(_depth(params, 'layer{}/fc1/kernel')):
    s, d = f'layer{i}', f'encoder.layer.{i}'
    for name in ('query', 'key', 'value'):
      out.update(_dense(params, f'{s}/attn/{name}', f'{d}.attention.self.{name}'))
    out.update(_dense(params, f'{s}/attn/out', f'{d}.attention.output.dense'))
    out.update(_ln(params, f'{s}/ln_attn', f'{d}.attention.output.LayerNorm'))
    out.update(_dense(params, f'{s}/fc1', f'{d}.intermediate.dense'))
    out.update(_dense(params, f'{s}/fc2', f'{d}.output.dense'))
    out.update(_ln(params, f'{s}/ln_mlp', f'{d}.output.LayerNorm'))
  if 'pooler/kernel' in params:
    out.update(_dense(params, 'pooler', 'pooler.dense'))
  return out


def bert_config(params: Params, text_cfg) -> dict:
  """A transformers BertConfig (config.json) for the exported tower."""
  vocab, width = params['token_embed/embedding'].shape
  return {'architectures': ['BertModel'], 'model_type': 'bert', 'vocab_size': int(vocab),
          'hidden_size': int(width), 'num_hidden_layers': _depth(params, 'layer{}/fc1/kernel'),
          'num_attention_heads': int(text_cfg.get('num_heads') or max(1, width // 64)),
          'intermediate_size': int(params['layer0/fc1/kernel'].shape[1]),
          'max_position_embeddings': int(params['pos_embed/embedding'].shape[0]),
          'type_vocab_size': int(params['type_embed/embedding'].shape[0]),
          'hidden_act': 'gelu', 'layer_norm_eps': 1e-12,
          'pad_token_id': int(text_cfg.get('pad_id', 0)),
          'hidden_dropout_prob': float(text_cfg.get('dropout', 0.1))}
