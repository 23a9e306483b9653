"""vlalign parameters -> reference-library state dicts and configs (the inverse of openclip.py,
hf_bert.py and timm_vit.py): OpenCLIP ViT and ResNet models (both towers, logit scale, batch-norm
statistics), the BERT text tower and the ViT image tower (Hugging Face ViTModel names)."""

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


def _conv(kernel: np.ndarray) -> np.ndarray:
  """flax's conv kernel [kh, kw, in, out] as PyTorch's weight [out, in, kh, kw]."""
  return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def _batch_norm(p: Params, stats: Params, src: str, dst: str) -> dict[str, np.ndarray]:
  """flax BatchNorm (scale, bias; mean, var statistics) as PyTorch's BatchNorm2d tensors
  (num_batches_tracked is not kept by vlalign; open_clip does not read it for inference)."""
  return {f'{dst}.weight': p[f'{src}/scale'], f'{dst}.bias': p[f'{src}/bias'],
          f'{dst}.running_mean': stats[f'{src}/mean'], f'{dst}.running_var': stats[f'{src}/var']}


def _conv_bn(p: Params, stats: Params, src_conv: str, src_bn: str, dst_conv: str,
             dst_bn: str) -> dict[str, np.ndarray]:
  return {f'{dst_conv}.weight': _conv(p[f'{src_conv}/kernel']),
          **_batch_norm(p, stats, src_bn, dst_bn)}


def _resnet_state(img: Params, stats: Params) -> dict[str, np.ndarray]:
  """open_clip ModifiedResNet tensors ('visual.*') from a clip_resnet tower."""
  out = {}
  for i in (1, 2, 3):
    out.update(_conv_bn(img, stats, f'stem_conv{i}', f'stem_bn{i}', f'visual.conv{i}',
                        f'visual.bn{i}'))
  stage = 1
  while f'layer{stage}_0/conv1/kernel' in img:
    i = 0
    while f'layer{stage}_{i}/conv1/kernel' in img:
      s, d = f'layer{stage}_{i}', f'visual.layer{stage}.{i}'
      for j in (1, 2, 3):
        out.update(_conv_bn(img, stats, f'{s}/conv{j}', f'{s}/bn{j}', f'{d}.conv{j}',
                            f'{d}.bn{j}'))
      if f'{s}/down_conv/kernel' in img:
        out.update(_conv_bn(img, stats, f'{s}/down_conv', f'{s}/down_bn', f'{d}.downsample.0',
                            f'{d}.downsample.1'))
      i += 1
    stage += 1
  out['visual.attnpool.positional_embedding'] = img['attnpool/pos_embed']
  for dst, src in (('q_proj', 'query'), ('k_proj', 'key'), ('v_proj', 'value'), ('c_proj', 'out')):
    out.update(_dense(img, f'attnpool/{src}', f'visual.attnpool.{dst}'))
  return out


def _vit_state(img: Params) -> dict[str, np.ndarray]:
  """open_clip VisionTransformer tensors ('visual.*') from a clip_vit tower."""
  out = {'visual.conv1.weight': _conv(img['patch_embed/kernel']),
         'visual.class_embedding': img['cls'], 'visual.positional_embedding': img['pos_embed'],
         'visual.proj': img['proj/kernel']}
  out.update(_ln(img, 'ln_pre', 'visual.ln_pre'))
  out.update(_ln(img, 'ln_post', 'visual.ln_post'))
  out.update(_clip_blocks(img, 'transformer', 'visual.transformer'))
  return out


def _tower(variables: Params, collection: str, tower: str) -> dict[str, np.ndarray]:
  prefix = f'{collection}/{tower}_tower/'
  return {k[len(prefix):]: v for k, v in variables.items() if k.startswith(prefix)}


def openclip_state(variables: Params) -> dict[str, np.ndarray]:
  """An open_clip CLIP state dict from a vlalign model's variables ('params/...',
  'batch_stats/...') with a clip_vit or clip_resnet image tower and a clip_text tower."""
  img, txt = _tower(variables, 'params', 'image'), _tower(variables, 'params', 'text')
  if 'token_embed/embedding' not in txt or not ('patch_embed/kernel' in img or
                                                'stem_conv1/kernel' in img):
    raise common.WeightsError('export to openclip needs a clip_vit or clip_resnet image tower '
                              'and a clip_text tower')
  if 'stem_conv1/kernel' in img:
    out = _resnet_state(img, _tower(variables, 'batch_stats', 'image'))
  else:
    out = _vit_state(img)
  out.update({'token_embedding.weight': txt['token_embed/embedding'],
              'positional_embedding': txt['pos_embed'], 'text_projection': txt['proj/kernel'],
              'logit_scale': np.asarray(variables['params/log_scale'], np.float32)})
  out.update(_ln(txt, 'ln_final', 'ln_final'))
  out.update(_clip_blocks(txt, 'transformer', 'transformer'))
  return out


def openclip_config(model_cfg, image_size: int, max_len: int) -> dict:
  """open_clip_config.json ({'model_cfg': ...}) for the exported model."""
  img, txt = model_cfg.image, model_cfg.text
  if img.name == 'clip_resnet':  # open_clip's heads: width * 32 // head_width
    vision = {'layers': list(img.layers), 'width': img.width, 'patch_size': None,
              'head_width': img.width * 32 // img.num_heads, 'image_size': image_size}
  else:
    vision = {'layers': img.depth, 'width': img.width, 'patch_size': img.patch,
              'head_width': img.width // img.num_heads, 'image_size': image_size}
  return {'model_cfg': {
      'embed_dim': int(model_cfg.embed_dim), 'quick_gelu': txt.get('act') == 'quick_gelu',
      'vision_cfg': vision,
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


# vlalign's ViT activations as Hugging Face's hidden_act names.
_HF_ACTS = {'gelu': 'gelu', 'gelu_tanh': 'gelu_pytorch_tanh'}


def _heads_dense(kernel: np.ndarray, output: bool) -> np.ndarray:
  """A DenseGeneral kernel as a PyTorch Linear weight: [d, heads, hd] for the query / key /
  value, [heads, hd, d] for the `output` projection."""
  flat = kernel.reshape(-1, kernel.shape[-1]) if output else kernel.reshape(kernel.shape[0], -1)
  return np.ascontiguousarray(flat.T)


def vit_state(params: Params, image_cfg) -> dict[str, np.ndarray]:
  """A transformers ViTModel state dict (transformers 5 names) from a ViT image tower with a
  patch stem and class-token pooling; its projection head has no ViTModel counterpart."""
  if image_cfg.name != 'vit' or image_cfg.get('stem', 'patch') != 'patch' or \
      image_cfg.get('pool') != 'cls' or image_cfg.get('act') not in _HF_ACTS:
    raise common.WeightsError(
        'export to hf writes a ViT image tower with model.image.stem="patch", pool="cls" and '
        f'act in {sorted(_HF_ACTS)} (what ViTModel computes); this tower is '
        f'{image_cfg.name!r} stem={image_cfg.get("stem")!r} pool={image_cfg.get("pool")!r} '
        f'act={image_cfg.get("act")!r}')
  e = 'embeddings'
  out = {f'{e}.patch_embeddings.projection.weight': _conv(params['patch_embed/kernel']),
         f'{e}.patch_embeddings.projection.bias': params['patch_embed/bias'],
         f'{e}.cls_token': params['cls'], f'{e}.position_embeddings': params['pos_embed']}
  for i in range(_depth(params, 'encoder/block{}/ln1/scale')):
    s, d = f'encoder/block{i}', f'layers.{i}'
    out.update(_ln(params, f'{s}/ln1', f'{d}.layernorm_before'))
    for src, dst in (('query', 'q_proj'), ('key', 'k_proj'), ('value', 'v_proj'),
                     ('out', 'o_proj')):
      out[f'{d}.attention.{dst}.weight'] = _heads_dense(params[f'{s}/attn/{src}/kernel'],
                                                      src == 'out')
      out[f'{d}.attention.{dst}.bias'] = params[f'{s}/attn/{src}/bias'].reshape(-1)
    out.update(_ln(params, f'{s}/ln2', f'{d}.layernorm_after'))
    out.update(_dense(params, f'{s}/mlp/fc1', f'{d}.mlp.fc1'))
    out.update(_dense(params, f'{s}/mlp/fc2', f'{d}.mlp.fc2'))
  out.update(_ln(params, 'encoder/ln_final', 'layernorm'))
  return out


def vit_config(params: Params, image_cfg, image_size: int) -> dict:
  """A transformers ViTConfig (config.json) for the exported tower."""
  width = int(params['cls'].shape[-1])
  return {'architectures': ['ViTModel'], 'model_type': 'vit', 'hidden_size': width,
          'num_hidden_layers': _depth(params, 'encoder/block{}/ln1/scale'),
          'num_attention_heads': int(image_cfg.num_heads),
          'intermediate_size': int(params['encoder/block0/mlp/fc1/kernel'].shape[1]),
          'hidden_act': _HF_ACTS[image_cfg.act], 'layer_norm_eps': float(image_cfg.ln_eps),
          'image_size': int(image_size), 'patch_size': int(image_cfg.patch),
          'num_channels': 3, 'qkv_bias': True, 'hidden_dropout_prob': 0.0,
          'attention_probs_dropout_prob': 0.0}
