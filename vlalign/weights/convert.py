"""A reference checkpoint -> a vlalign config (towers, sizes, pixel statistics) that builds the
checkpoint's model, with the init_from fields that load it (used by tools/import_weights)."""

import math
import os

from absl import logging

import ml_collections

from vlalign.data import image_ops
from vlalign.weights import common, hf_align, hf_bert, load, openclip, timm_effnet, timm_vit

HALF = (127.5, 127.5, 127.5)  # mean = std = 0.5: ImageNet-21k ViTs (timm's and HF's default)


def _tower(cfg: dict, spec: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**cfg, 'init_from': spec, 'trainable': True})


def _set_images(config, size: int, image_size: int, mean, std) -> None:
  d = config.data
  d.image_size = image_size or size
  d.resize_size = max(d.resize_size, d.image_size)
  d.pixel_mean, d.pixel_std = tuple(float(x) for x in mean), tuple(float(x) for x in std)


def _pixel_stats(hints: dict, default: tuple) -> tuple[tuple, tuple]:
  """Mean / std (0..255) from timm's pretrained_cfg or HF's preprocessor fields, else the
  family's default (mean, std)."""
  src = hints.get('pretrained_cfg', hints)
  mean, std = src.get('mean', src.get('image_mean')), src.get('std', src.get('image_std'))
  if mean and std:
    return tuple(255 * m for m in mean), tuple(255 * s for s in std)
  return default


def _openclip(config, path: str, t: dict, hints: dict, image_size: int) -> None:
  image, size = openclip.image_config(t, hints)
  text, vocab, context = openclip.text_config(t, hints)
  m = config.model
  with m.unlocked():
    m.image, m.text = _tower(image, ''), _tower(text, '')
  m.init_from = f'openclip:{path}'  # the whole model, logit scale included
  m.image_projection = m.text_projection = 'none'
  m.embed_dim, m.vocab_size = image['output_dim'], vocab
  m.learn_temperature = True
  m.temperature_init = math.exp(-float(t['logit_scale']))
  config.data.max_len = context
  # open_clip's tokenizer: CLIP's byte-level BPE (its merges ship with vlalign), context 77.
  config.data.tokenizer.kind, config.data.tokenizer.vocab_file = 'bpe', ''
  config.data.vocab_file = ''
  _set_images(config, size, image_size, image_ops.CLIP_MEAN, image_ops.CLIP_STD)


def _image_tower(config, fmt: str, path: str, t: dict, hints: dict, image_size: int) -> None:
  hf = fmt == 'hf'
  if hf and hf_align.is_align(t):
    image, size = hf_align.image_config(t, hints)
    size = size or config.data.image_size
    default = HALF, HALF  # ALIGN's processor: x / 127.5 - 1
  elif not hf and 'conv_stem.weight' in t:
    image, size = timm_effnet.image_config(t, hints)
    size = size or config.data.image_size  # convolutional: any size
    default = image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD  # timm's tf_efficientnet stats
  else:
    image, size = timm_vit.image_config(timm_vit.from_hf(t) if hf else t, hints,
                                        ln_eps=1e-12 if hf else 1e-6)
    default = HALF, HALF
  with config.model.unlocked():
    config.model.image = _tower(image, f'{fmt}:{path}')
  mean, std = _pixel_stats(hints, default)
  _set_images(config, size, image_size, mean, std)


def _bert(config, path: str, t: dict, hints: dict) -> None:
  text, vocab, positions = hf_bert.text_config(t, hints)
  with config.model.unlocked():
    config.model.text = _tower(text, f'hf:{path}')
  config.model.vocab_size = vocab
  config.data.max_len = min(config.data.max_len, positions)
  _bert_tokenizer(config, path, hints)


def _bert_tokenizer(config, path: str, hints: dict) -> None:
  """BERT's WordPiece: the vocab.txt beside the checkpoint (as Hugging Face folders hold it);
  lower-casing from its tokenizer_config.json (do_lower_case) or the model name ('uncased')."""
  folder = os.path.dirname(os.path.abspath(path))
  vocab = os.path.join(folder, 'vocab.txt')
  t = config.data.tokenizer
  t.kind = 'wordpiece'
  if os.path.exists(vocab):
    t.vocab_file, config.data.vocab_file = vocab, ''
  else:
    logging.warning('no vocab.txt beside %s: set config.data.tokenizer.vocab_file to the '
                    "checkpoint's WordPiece vocabulary before training", path)
  tok_cfg = os.path.join(folder, 'tokenizer_config.json')
  if os.path.exists(tok_cfg):
    lower = common.read_json(tok_cfg).get('do_lower_case')
    if lower is not None:
      t.lower_case = bool(lower)
  elif 'uncased' in str(hints.get('_name_or_path', '')):
    t.lower_case = True


def _align(config, path: str, t: dict, hints: dict, image_size: int) -> None:
  """AlignModel: EfficientNet (HF padding) + BERT [CLS] -> Linear with bias, temperature."""
  _image_tower(config, 'hf', path, t, hints.get('vision_config', {}), image_size)
  _bert(config, path, t, hints.get('text_config', {}))
  m = config.model
  m.image.init_from = m.text.init_from = ''
  m.text.pooler = False
  m.init_from = f'hf:{path}'
  m.image_projection, m.text_projection = 'none', 'linear_bias'
  m.embed_dim = int(t['text_projection.weight'].shape[0])
  m.learn_temperature, m.temperature_init = True, float(t['temperature'])


def configure(config: ml_collections.ConfigDict, fmt: str, path: str, hints: dict,
              image_size: int = 0) -> list[str]:
  """Sets `config`'s towers (and sizes, pixel statistics, init_from) from the checkpoint at
  `path`; returns the towers it provides ('image', 'text')."""
  t = common.read_safetensors(path)
  if fmt == 'openclip':
    _openclip(config, path, t, hints, image_size)
    return ['image', 'text']
  if fmt not in load.FORMATS:
    raise common.WeightsError(f'--format must be one of {load.FORMATS}, got {fmt!r}')
  bert = common.strip_prefix(t, hf_bert.PREFIXES)
  if fmt == 'hf' and hf_align.is_align(t) and 'temperature' in t:
    _align(config, path, t, hints, image_size)
    return ['image', 'text']
  if fmt == 'hf' and 'embeddings.word_embeddings.weight' in bert:
    _bert(config, path, t, hints)
    return ['text']
  _image_tower(config, fmt, path, t, hints, image_size)
  return ['image']
