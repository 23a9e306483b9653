"""vlalign EfficientNet towers -> Hugging Face ALIGN (AlignModel, AlignVisionModel) and timm
tf_efficientnet state dicts and configs: the inverse of hf_align.py and timm_effnet.py,
batch-norm statistics included."""

import math
from typing import Mapping

import numpy as np

from vlalign.models import efficientnet
from vlalign.weights import common
from vlalign.weights.export import (  # pylint: disable=protected-access
    _batch_norm, _conv, _dense, bert_config, bert_state)

Params = Mapping[str, np.ndarray]  # flat 'a/b/c' names relative to a tower (or the model)
# AlignVisionConfig.hidden_dim: AlignVisionModel's pooler is AvgPool2d(hidden_dim,
# ceil_mode=True), a global mean for any last grid up to this size (the library's default).
ALIGN_POOL = 2560


def _conv_bn(p: Params, stats: Params, src: str, conv: str, bn: str) -> dict[str, np.ndarray]:
  """vlalign's '<src>_conv' kernel and '<src>_bn' norm as a PyTorch conv + BatchNorm2d."""
  return {f'{conv}.weight': _conv(p[f'{src}_conv/kernel']),
          **_batch_norm(p, stats, f'{src}_bn', bn)}


def _se(p: Params, src: str, dst: str, reduce: str, expand: str) -> dict[str, np.ndarray]:
  out = {}
  for name, torch_name in (('reduce', reduce), ('expand', expand)):
    out[f'{dst}.{torch_name}.weight'] = _conv(p[f'{src}/se/{name}/kernel'])
    out[f'{dst}.{torch_name}.bias'] = p[f'{src}/se/{name}/bias']
  return out


def _blocks(p: Params) -> int:
  n = 0
  while f'block{n}/dw_conv/kernel' in p:
    n += 1
  return n


def check_tower(image_cfg, padding: str, library: str) -> None:
  """Raises WeightsError unless the image tower is an EfficientNet with `padding`."""
  if image_cfg.name != 'efficientnet' or image_cfg.get('padding', 'same') != padding:
    raise common.WeightsError(
        f'export to {library} writes an EfficientNet image tower with model.image.padding='
        f'{padding!r} (the padding {library} computes with); this tower is {image_cfg.name!r} '
        f'padding={image_cfg.get("padding", "same")!r}. The two conventions differ at odd grid '
        "sizes: a 'same' tower exports with --format=timm, an 'hf' one with --format=hf")


def align_vision_state(p: Params, stats: Params) -> dict[str, np.ndarray]:
  """transformers AlignVisionModel tensors (no prefix) from an EfficientNet tower's
  parameters and batch-norm statistics (ALIGN's vision model has no top conv)."""
  if 'top_conv/kernel' in p:
    raise common.WeightsError('export to hf: ALIGN\'s vision model has no top conv or classifier; '
                              'this tower has model.image.include_top=True (export it with '
                              '--format=timm)')
  out = _conv_bn(p, stats, 'stem', 'embeddings.convolution', 'embeddings.batchnorm')
  for i in range(_blocks(p)):
    s, d = f'block{i}', f'encoder.blocks.{i}'
    if f'{s}/expand_conv/kernel' in p:
      out.update(_conv_bn(p, stats, f'{s}/expand', f'{d}.expansion.expand_conv',
                          f'{d}.expansion.expand_bn'))
    out.update(_conv_bn(p, stats, f'{s}/dw', f'{d}.depthwise_conv.depthwise_conv',
                        f'{d}.depthwise_conv.depthwise_norm'))
    out.update(_conv_bn(p, stats, f'{s}/project', f'{d}.projection.project_conv',
                        f'{d}.projection.project_bn'))
    out.update(_se(p, s, f'{d}.squeeze_excite', 'reduce', 'expand'))
  return out


def _coefficients(image_cfg) -> tuple[float, float]:
  width, depth = efficientnet.VARIANTS[image_cfg.get('variant', 'b0')][:2]
  return (float(image_cfg.get('width_coefficient') or width),
          float(image_cfg.get('depth_coefficient') or depth))


def align_vision_config(image_cfg, image_size: int) -> dict:
  """transformers AlignVisionConfig fields for the tower: the B0 stages (the library's
  defaults, written out), its coefficients, TF's batch-norm eps, HF's padding on every
  stride-2 depthwise conv (depthwise_padding=[]), mean pooling."""
  width, depth = _coefficients(image_cfg)
  stages = efficientnet.STAGES
  return {'model_type': 'align_vision_model', 'num_channels': 3, 'image_size': int(image_size),
          'width_coefficient': width, 'depth_coefficient': depth, 'depth_divisor': 8,
          'kernel_sizes': [s[0] for s in stages], 'strides': [s[1] for s in stages],
          'expand_ratios': [s[2] for s in stages], 'in_channels': [s[3] for s in stages],
          'out_channels': [s[4] for s in stages], 'num_block_repeats': [s[5] for s in stages],
          'depthwise_padding': [], 'squeeze_expansion_ratio': efficientnet.SE_RATIO,
          'hidden_act': 'swish', 'hidden_dim': ALIGN_POOL,
          'pooling_type': 'mean', 'batch_norm_eps': efficientnet.BN_EPSILON,
          'batch_norm_momentum': efficientnet.BN_MOMENTUM,
          'drop_connect_rate': float(image_cfg.get('drop_path_rate', 0.2))}


def temperature(log_scale: float) -> np.float32:
  """ALIGN's temperature for vlalign's log scale (-log temperature): of the float32 values that
  import back to this log scale, the one with the fewest digits (0.05 stays 0.05), else the
  nearest to exp(-log_scale)."""
  log_scale = np.float32(log_scale)
  near = np.float32(math.exp(-float(log_scale)))
  cands, x, y = [near], near, near
  for _ in range(8):
    x, y = np.nextafter(x, np.float32(-np.inf)), np.nextafter(y, np.float32(np.inf))
    cands += [x, y]
  back = [c for c in cands if c > 0 and np.float32(-math.log(float(c))) == log_scale] or [near]
  return min(back, key=lambda c: (len(np.format_float_positional(c, unique=True)),
                                  abs(float(c) - math.exp(-float(log_scale)))))


def model_temperature(variables: Params, model_cfg) -> np.float32:
  """The temperature the model computes with: learned (params/log_scale) or, with
  model.learn_temperature=False, the constant model.temperature_init."""
  if model_cfg.get('learn_temperature', True):
    return temperature(variables['params/log_scale'])
  return np.float32(model_cfg.temperature_init)


def align_state(variables: Params, model_cfg) -> dict[str, np.ndarray]:
  """A transformers AlignModel state dict from a whole model's variables ('params/...',
  'batch_stats/...'). The text model's pooler is left out: vlalign's ALIGN text tower embeds
  [CLS] without it (as AlignModel does), so transformers initialises that unused layer."""
  tower = lambda c, t: {k[len(f'{c}/{t}_tower/'):]: v for k, v in variables.items()
                        if k.startswith(f'{c}/{t}_tower/')}
  text = tower('params', 'text')
  out = {f'vision_model.{k}': v for k, v in
         align_vision_state(tower('params', 'image'), tower('batch_stats', 'image')).items()}
  out.update({f'text_model.{k}': v for k, v in bert_state(text).items()})
  proj = {k[len('params/'):]: v for k, v in variables.items() if k.startswith('params/text_proj/')}
  if 'text_proj/bias' not in proj:
    raise common.WeightsError('export to hf (AlignModel) needs model.text_projection='
                              '"linear_bias" and model.image_projection="none" (ALIGN\'s head)')
  out.update(_dense(proj, 'text_proj', 'text_projection'))
  out['temperature'] = np.asarray(model_temperature(variables, model_cfg), np.float32)
  return out


def align_config(variables: Params, model_cfg, image_size: int) -> dict:
  """A transformers AlignConfig (config.json) for the exported model."""
  prefix = 'params/text_tower/'
  text = {k[len(prefix):]: v for k, v in variables.items() if k.startswith(prefix)}
  text_cfg = {k: v for k, v in bert_config(text, model_cfg.text).items() if k != 'architectures'}
  return {'architectures': ['AlignModel'], 'model_type': 'align',
          'projection_dim': int(variables['params/text_proj/kernel'].shape[1]),
          'temperature_init_value': float(np.format_float_positional(
              model_temperature(variables, model_cfg), unique=True)),
          'text_config': {**text_cfg, 'model_type': 'align_text_model'},
          'vision_config': align_vision_config(model_cfg.image, image_size)}


def check_align_model(model_cfg) -> None:
  """Raises WeightsError unless the model has ALIGN's layout (EfficientNet with HF padding,
  Bert without pooler, no image projection, a text projection with bias)."""
  check_tower(model_cfg.image, 'hf', 'hf (AlignModel)')
  text = model_cfg.text
  if model_cfg.get('bias_init') is not None:
    raise common.WeightsError('export to hf (AlignModel): this model learns a logit bias '
                              '(model.bias_init, SigLIP\'s), which AlignModel does not have')
  if (text.name != 'bert' or text.get('pooler') or model_cfg.image_projection != 'none' or
      model_cfg.text_projection != 'linear_bias'):
    raise common.WeightsError(
        'export to hf (AlignModel) needs model.text.name="bert" with pooler=False, '
        'model.image_projection="none" and model.text_projection="linear_bias" (ALIGN\'s '
        f'head); this model has text {text.name!r} pooler={text.get("pooler")!r}, projections '
        f'{model_cfg.image_projection!r} / {model_cfg.text_projection!r}')


def _stage_sizes(image_cfg, blocks: int) -> list[int]:
  """Blocks per B0 stage at the tower's depth coefficient (timm names blocks.<stage>.<i>)."""
  depth = _coefficients(image_cfg)[1]
  sizes = [efficientnet.round_repeats(s[5], depth) for s in efficientnet.STAGES]
  if sum(sizes) != blocks:
    raise common.WeightsError(f'export to timm: the tower has {blocks} blocks, its config '
                              f'(depth coefficient {depth}) {sum(sizes)}')
  return sizes


def timm_state(p: Params, stats: Params, image_cfg) -> dict[str, np.ndarray]:
  """A timm EfficientNet state dict (tf_efficientnet names) from an EfficientNet tower: stem,
  blocks (stage 0 as timm's DepthwiseSeparableConv), and with include_top the head."""
  out = _conv_bn(p, stats, 'stem', 'conv_stem', 'bn1')
  i = 0
  for stage, size in enumerate(_stage_sizes(image_cfg, _blocks(p))):
    for j in range(size):
      s, d = f'block{i}', f'blocks.{stage}.{j}'
      if f'{s}/expand_conv/kernel' in p:
        names = (('expand', 'conv_pw', 'bn1'), ('dw', 'conv_dw', 'bn2'),
                 ('project', 'conv_pwl', 'bn3'))
      else:
        names = (('dw', 'conv_dw', 'bn1'), ('project', 'conv_pw', 'bn2'))
      for src, conv, bn in names:
        out.update(_conv_bn(p, stats, f'{s}/{src}', f'{d}.{conv}', f'{d}.{bn}'))
      out.update(_se(p, s, f'{d}.se', 'conv_reduce', 'conv_expand'))
      i += 1
  if 'top_conv/kernel' in p:
    out.update(_conv_bn(p, stats, 'top', 'conv_head', 'bn2'))
  if 'classifier/kernel' in p:
    out.update(_dense(p, 'classifier', 'classifier'))
  return out


def timm_config(p: Params, image_cfg, data_cfg) -> dict:
  """timm's config.json (architecture, classes, features, pretrained_cfg with the input size
  and pixel statistics). A tower whose coefficients are not its variant's also gets
  channel_multiplier / depth_multiplier, for timm's _gen_efficientnet (no named model)."""
  variant = image_cfg.get('variant', 'b0')
  width, depth = _coefficients(image_cfg)
  top = 'top_conv/kernel' in p
  size = int(data_cfg.image_size)
  out = {'architecture': f'tf_efficientnet_{variant}',
         'num_classes': int(p['classifier/kernel'].shape[1]) if 'classifier/kernel' in p else 0,
         'num_features': int((p['top_conv/kernel'] if top else
                              p[f'block{_blocks(p) - 1}/project_conv/kernel']).shape[-1]),
         'global_pool': 'avg',
         'pretrained_cfg': {'input_size': [3, size, size], 'interpolation': 'bicubic',
                            'mean': [float(m) / 255 for m in data_cfg.pixel_mean],
                            'std': [float(s) / 255 for s in data_cfg.pixel_std],
                            'classifier': 'classifier', 'first_conv': 'conv_stem'}}
  if (width, depth) != efficientnet.VARIANTS[variant][:2]:
    out.update(channel_multiplier=width, depth_multiplier=depth)
  return out
