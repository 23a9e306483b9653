"""The public checkpoints the paper configs start from, and where they are read.

Every file lives under one folder: $VLALIGN_WEIGHTS (default ~/.cache/vlalign/weights), one
sub-folder per checkpoint named as on the Hugging Face Hub. Get them once (safetensors only;
`hf` is huggingface_hub's CLI, `pip install huggingface_hub`; older versions call it
`huggingface-cli download`):

  W=${VLALIGN_WEIGHTS:-$HOME/.cache/vlalign/weights}
  hf download google-bert/bert-base-uncased model.safetensors config.json vocab.txt \
      tokenizer_config.json --local-dir $W/bert-base-uncased
  hf download timm/vit_base_patch16_224.augreg_in21k model.safetensors config.json \
      --local-dir $W/vit_base_patch16_224.augreg_in21k        # ZeroVL
  hf download timm/deit_base_patch16_224.fb_in1k model.safetensors config.json \
      --local-dir $W/deit_base_patch16_224.fb_in1k            # ViCHA
  hf download timm/tf_efficientnet_b5.ns_jft_in1k model.safetensors config.json \
      --local-dir $W/tf_efficientnet_b5.ns_jft_in1k           # BriVL

A checkpoint you hold only as a pickle (.bin / .pth) converts once, where torch is installed:
  python -c "import torch, safetensors.torch as st; \
      sd = torch.load('pytorch_model.bin', map_location='cpu', weights_only=True); \
      st.save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors')"
(the original ImageNet-21k ViT-B/16, HF google/vit-base-patch16-224-in21k, works too:
--config.model.image.init_from=hf:<folder>/model.safetensors --config.model.image.ln_eps=1e-12).

A missing file stops the run while the config is validated (seconds), naming the field and the
path: data.tokenizer.vocab_file for vocab.txt, model.image.init_from / model.text.init_from for
the weights. Override any path with --config.<field>=...; train a tower from scratch with
--config.model.image.init_from='' (or the configs' `scratch` argument).
"""

import os

import ml_collections

from vlalign.data import image_ops

ENV = 'VLALIGN_WEIGHTS'
DEFAULT_DIR = os.path.join('~', '.cache', 'vlalign', 'weights')
HALF = (127.5, 127.5, 127.5)  # mean = std = 0.5 (ImageNet-21k ViTs): pixels to [-1, 1]

BERT = 'bert-base-uncased'
VIT_IN21K = 'vit_base_patch16_224.augreg_in21k'
DEIT = 'deit_base_patch16_224.fb_in1k'


def weights_dir() -> str:
  """$VLALIGN_WEIGHTS, else ~/.cache/vlalign/weights (expanded; read when get_config runs)."""
  return os.path.expanduser(os.environ.get(ENV) or DEFAULT_DIR)


def path(checkpoint: str, name: str = 'model.safetensors') -> str:
  """<weights_dir>/<checkpoint>/<name>."""
  return os.path.join(weights_dir(), checkpoint, name)


def bert_base_uncased(config: ml_collections.ConfigDict) -> None:
  """The text tower from bert-base-uncased and its WordPiece vocabulary (lower-cased)."""
  config.model.text.init_from = f'hf:{path(BERT)}'
  config.model.vocab_size = 30_522
  t = config.data.tokenizer
  t.kind, t.vocab_file, t.lower_case = 'wordpiece', path(BERT, 'vocab.txt'), True
  config.data.vocab_file = ''


def timm_vit(config: ml_collections.ConfigDict, checkpoint: str, mean, std) -> None:
  """A timm ViT-B/16 image tower: exact GELU, LayerNorm eps 1e-6, the checkpoint's pixel stats."""
  config.model.image.update(act='gelu', ln_eps=1e-6, init_from=f'timm:{path(checkpoint)}')
  config.data.pixel_mean, config.data.pixel_std = tuple(mean), tuple(std)


def vit_in21k(config: ml_collections.ConfigDict) -> None:
  """ZeroVL's image tower: the ImageNet-21k ViT-B/16 (timm augreg), pixels to [-1, 1]."""
  timm_vit(config, VIT_IN21K, HALF, HALF)


def deit_b16(config: ml_collections.ConfigDict) -> None:
  """ViCHA's image tower: DeiT-B/16 (ImageNet-1k, as ALBEF / ViCHA load it). Pixel stats as
  their code normalises (ALBEF's transforms use CLIP's mean / std, not DeiT's ImageNet ones)."""
  timm_vit(config, DEIT, image_ops.CLIP_MEAN, image_ops.CLIP_STD)


def tf_efficientnet(config: ml_collections.ConfigDict, variant: str) -> None:
  """A timm tf_efficientnet_<variant> (NoisyStudent) image tower, TF 'same' padding, ImageNet
  stats."""
  checkpoint = f'tf_efficientnet_{variant}.ns_jft_in1k'
  config.model.image.update(padding='same', init_from=f'timm:{path(checkpoint)}')
  config.data.pixel_mean = tuple(image_ops.IMAGENET_MEAN)
  config.data.pixel_std = tuple(image_ops.IMAGENET_STD)
