"""ZeroVL (Cui et al. 2022) with a ViT-B/16 and BERT-Base (docs/METHODS.md section 2;
vlalign/methods/zerovl.py).

get_config(arg): arg is a comma-separated list.
  (none)  the paper's recipe: ViT-B/16 [CLS] + BERT-Base [CLS], each Linear(768 -> 512, no bias),
          L2-normalised; 25 text tokens; temperature fixed at 0.02; mean of the two directions;
          debiased sampling over the configured sources, coin-flipping mixup (Beta(0.1, 0.1)),
          ZeroVL's text augmentation (0.2); global batch 16,384 as 16 decoupled micro-batches of
          1,024; AdamW (0.9, 0.98), eps 1e-6, wd 1e-3, lr 1e-4 with 2.5% warm-up and cosine decay
          to 0.1x over 20 epochs of 14.2M pairs. Needs real data: set config.data.sources
          (several, for debiased sampling).
          Starts, as the paper does, from public checkpoints (configs/pretrained.py has the
          download commands): the image tower from timm's ImageNet-21k ViT-B/16
          (vit_base_patch16_224.augreg_in21k: exact GELU, LayerNorm eps 1e-6, pixels to
          [-1, 1]), the text tower from bert-base-uncased with its uncased WordPiece vocab.txt,
          read from $W = $VLALIGN_WEIGHTS (default ~/.cache/vlalign/weights):
            model.image.init_from  timm:$W/vit_base_patch16_224.augreg_in21k/model.safetensors
            model.text.init_from   hf:$W/bert-base-uncased/model.safetensors
            data.tokenizer.vocab_file  $W/bert-base-uncased/vocab.txt
          Without the files the run stops while validating, naming the field and the path.
  scratch the paper's recipe with both towers from scratch (set data.tokenizer.vocab_file).
  small   the demo's towers and budget (configs/demo.py: 600 steps of 512) with ZeroVL's pieces:
          debiased sampling over the embedded data's two sources, mixup, text augmentation and
          2 decoupled micro-batches and ZeroVL's fixed temperature 0.02, so its held-out numbers
          compare with the plain demo's. From random towers at the demo's lr the fixed 0.02 with
          debiased sampling collapses the towers (docs/DATA_EFFICIENCY.md, the ZeroVL probes).
  tiny    a seconds-long variant of `small` for the tests.
"""

import os

import ml_collections

from vlalign import config_lib


def _load(name: str):
  return config_lib.load_config_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), name))


def zerovl_pieces(config: ml_collections.ConfigDict, micro_batches: int) -> None:
  """Debiased sampling, coin-flipping mixup, text augmentation, decoupled accumulation."""
  config.data.mixing = 'debiased'
  config.data.zerovl_text_aug = 0.2
  config.mixup.update(enabled=True, beta=0.1)
  config.grad_accum.micro_batches = micro_batches
  config.loss.update(name='softmax', label_smoothing=0.0, reduction='mean')


def paper_config(pretrained: bool = True) -> ml_collections.ConfigDict:
  """The paper's recipe; `pretrained` starts from the in21k ViT-B/16 and bert-base-uncased."""
  config = config_lib.base_config()
  d = config.data
  d.sources = ()  # several sources of your data (debiased sampling draws one per batch)
  d.global_batch = 16_384
  d.image_size, d.resize_size, d.max_len = 224, 256, 25
  d.random_crop, d.flip = True, True
  config.evals.heldout = False
  m = config.model
  m.image = ml_collections.ConfigDict({'name': 'vit', 'patch': 16, 'width': 768, 'depth': 12,
                                       'num_heads': 12, 'mlp_ratio': 4.0, 'pool': 'cls',
                                       'stem': 'patch', 'dropout': 0.0})
  m.text = ml_collections.ConfigDict({'name': 'bert', 'size': 'base', 'pooler': False,
                                      'dropout': 0.1})
  m.embed_dim = 512
  m.image_projection, m.text_projection = 'linear', 'linear'
  m.vocab_size = 30_522
  m.temperature_init, m.learn_temperature = 0.02, False
  m.compute_dtype = 'bfloat16'
  zerovl_pieces(config, micro_batches=16)
  steps = 20 * 14_200_000 // 16_384  # 20 epochs of 14.2M pairs
  config.total_steps = steps
  config.optimizer.update(name='adamw', lr=1e-4, warmup_steps=int(0.025 * steps),
                          decay='cosine', end_lr_factor=0.1, weight_decay=1e-3, b1=0.9,
                          b2=0.98, eps=1e-6, grad_clip=0.0)
  config.log_every, config.checkpoint_every = 100, 2_000
  if pretrained:
    weights = _load('pretrained.py')
    weights.vit_in21k(config)
    weights.bert_base_uncased(config)
  return config


OPTIONS = ('scratch', 'small', 'tiny')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """ZeroVL ViT-B/16 + BERT-Base; `small` / `tiny` on the embedded data."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  if not args & {'small', 'tiny'}:
    return config_lib.finish(paper_config(pretrained='scratch' not in args))
  config = _load('demo.py').get_config('tiny' if 'tiny' in args else 'v48')
  config.data.sources = ('embedded:studio', 'embedded:sketch')
  zerovl_pieces(config, micro_batches=2)
  # ZeroVL keeps its temperature fixed at 0.02 (the demo learns it from 0.07).
  config.model.temperature_init, config.model.learn_temperature = 0.02, False
  # On a CPU the unrolled micro-batch loop is 4x faster than the looped one (methods/zerovl.py
  # `sequential`); the paper-scale config keeps the memory-saving loop.
  config.grad_accum.unroll = True
  return config_lib.finish(config)
