"""DeCLIP (Li et al. 2022) with CLIP's ViT-B/32 image tower and text transformer
(docs/METHODS.md section 3; vlalign/methods/declip.py).

get_config(arg): arg is a comma-separated list.
  (none)  the paper's towers and recipe: CLIP ViT-B/32 (224 px) + CLIP text transformer (512
          wide, 12 layers, 8 heads, 77 tokens), embeddings 512, logit scale init 1/0.07 clamped
          at 100 with the log-scale kept in [3, 6]; MVS / ISS / TSS / NNS weighted 0.4 / 0.2 / 0.2 /
          0.2 (`mvs06`: 0.6 for MVS, their large-data ViT-B/32 setting), a global text bank of
          2,097,152 rows (DeCLIP's 65,536 per GPU on 32 GPUs); AdamW (0.9, 0.98, eps 1e-8), wd 0.1,
          warm-up 1e-4 -> 1e-3 over 2.5k steps then cosine to 0 at 128k steps, batch 4,096. Needs
          real data: set config.data.sources and config.data.tokenizer.vocab_file.
  small   the demo's towers, data and budget (configs/demo.py: 600 steps of 512) with the
          DeCLIP objective and views, so its held-out numbers compare with the plain demo's.
  tiny    seconds-long variant of `small` for the tests.
"""

import os

import ml_collections

from vlalign import config_lib


def _load(name: str):
  return config_lib.load_config_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), name))


def declip_method(config: ml_collections.ConfigDict, bank_batches: int,
                  mvs_weight: float = 0.4) -> None:
  """The DeCLIP objective, its views and a bank of `bank_batches` global batches."""
  config.method.name = 'declip'
  config.method.declip.update(bank_size=bank_batches * config.data.global_batch,
                              max_logit_scale=100.0)
  # DeCLIP's runner clamps the log-scale parameter to [3, 6] before and after every step; the
  # model caps the scale's value at 100 with the gradient kept (methods/logit_scale.py).
  config.optimizer.log_scale_range = (3.0, 6.0)
  config.method.declip.weights.update(mvs=mvs_weight, iss=0.2, tss=0.2, nns=0.2)
  # MoCo-v2's augmentation on both image views, as DeCLIP's data loader applies it.
  config.data.views.update(image2=True, image1_strong=True, text_mlm=True, text_eda=True,
                           mlm_prob=0.15, eda_alpha=0.1)
  # CLIP's loss: no label smoothing, the mean of the two directions.
  config.loss.update(name='softmax', label_smoothing=0.0, reduction='mean')


def paper_config(image: ml_collections.ConfigDict, embed_dim: int = 512, image_size: int = 224,
                 mvs_weight: float = 0.4) -> ml_collections.ConfigDict:
  """The DeCLIP recipe with the given CLIP image tower (ending in its own projection to
  `embed_dim`, as the text transformer does)."""
  config = config_lib.base_config()
  config.total_steps = 128_000
  d = config.data
  d.sources = ()  # set to your data, with data.tokenizer.vocab_file
  config.evals.heldout = False
  d.global_batch = 4096
  d.image_size, d.resize_size, d.max_len = image_size, image_size, 77
  d.random_crop, d.flip = True, True
  d.views.update(crop_scale=(0.2, 1.0), flip=True, color_jitter=0.4, grayscale=0.2, blur=0.5)
  m = config.model
  m.image = image
  m.text = ml_collections.ConfigDict({'name': 'clip_text', 'width': 512, 'depth': 12,
                                      'num_heads': 8, 'output_dim': embed_dim})
  m.embed_dim = embed_dim
  m.image_projection, m.text_projection = 'none', 'none'
  m.vocab_size = 49_408  # CLIP's BPE vocabulary size
  m.temperature_init, m.learn_temperature = 0.07, True
  m.compute_dtype = 'bfloat16'
  # lr 1e-4 -> 1e-3 over 2.5k steps: a linear warm-up from 0 reaches 1e-4 at step 250 (close).
  config.optimizer.update(name='adamw', lr=1e-3, warmup_steps=2_500, decay='cosine',
                          end_lr_factor=0.0, weight_decay=0.1, b1=0.9, b2=0.98, eps=1e-8,
                          grad_clip=0.0)
  # DeCLIP keeps a 65,536-row text bank on each of its 32 GPUs (128 pairs each): T and T' of
  # 128 pairs enter per step, 256 steps of history, searched per GPU. vlalign's bank is one
  # global FIFO (the global batch's 8,192 texts per step): sized 32 x 65,536 = 2,097,152 rows it
  # holds the same 256 steps and the same 65,536 rows per device over 32 devices, and every
  # lookup searches all of them (32x the candidates of one GPU's bank).
  declip_method(config, bank_batches=512, mvs_weight=mvs_weight)  # 512 x 4,096
  config.log_every, config.checkpoint_every = 100, 2_000
  return config


def demo_config(tiny: bool) -> ml_collections.ConfigDict:
  """`small` / `tiny`: configs/demo.py with the DeCLIP objective."""
  config = _load('demo.py').get_config('tiny' if tiny else 'v48')
  declip_method(config, bank_batches=3 if tiny else 8)
  # SimSiam heads scaled with the embedding (the paper's 1024 / 512 go with 512-d embeddings):
  # 2 x embed_dim wide, predictor bottleneck half of that.
  config.method.declip.update(projector_dim=2 * config.model.embed_dim,
                              predictor_dim=config.model.embed_dim)
  # The embedded data's captions are about colour: keep the second view's colours (no jitter,
  # no grayscale); crops, flips and blur still differ from the first view.
  config.data.views.update(crop_scale=(0.35, 1.0), color_jitter=0.0, grayscale=0.0, blur=0.5)
  return config


OPTIONS = ('mvs06', 'small', 'tiny')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """DeCLIP ViT-B/32; `small` / `tiny` on the embedded data (see the module docstring)."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  if args & {'small', 'tiny'}:
    return config_lib.finish(demo_config(tiny='tiny' in args))
  image = ml_collections.ConfigDict({'name': 'clip_vit', 'patch': 32, 'width': 768, 'depth': 12,
                                     'num_heads': 12, 'output_dim': 512})
  return config_lib.finish(paper_config(image, mvs_weight=0.6 if 'mvs06' in args else 0.4))
