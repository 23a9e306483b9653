"""ViCHA (Shukor et al., BMVC 2022), its two-tower parts, with a ViT-B/16 image tower and a
6-layer BERT text tower (docs/METHODS.md section 5; vlalign/methods/vicha.py).

get_config(arg): arg is a comma-separated list.
  (none)  the recipe at paper scale: ViT-B/16 at 256 px + the first 6 layers of BERT-Base,
          projections 768 -> 256, learnable temperature from 0.07, momentum encoders (0.995),
          queues of 65,536, momentum distillation alpha = 0.4 ramped in over the first epoch,
          hierarchical alignment of ViT blocks 7..11 with text layers 1..5 (1-based) at 0.1
          each, MAE (75% masked, 2-block 768-wide decoder, 16 heads, fixed sin-cos positions) at
          weight 1, visual concepts (4 of the top 15, 2-layer encoder); logit scale with ALBEF's
          clamp (optimizer.log_scale_range: temperature in [0.001, 0.5]); AdamW lr 1e-4, wd
          0.02, cosine to 1e-5, batch 128.
          Needs real data (config.data.sources) and a concepts file (method.vicha.concepts_file,
          from python -m vlalign.tools.concepts; ViCHA ranks with a CLIP model: import one
          with tools/import_weights and pass its workdir, README "Start from pretrained
          weights").
          Starts, as ViCHA's code (after ALBEF) does, from public checkpoints
          (configs/pretrained.py has the download commands), read from
          $W = $VLALIGN_WEIGHTS (default ~/.cache/vlalign/weights): the image tower from timm's
          DeiT-B/16 (deit_base_patch16_224.fb_in1k: exact GELU, LayerNorm eps 1e-6; pixels
          normalised with CLIP's mean / std as ViCHA's (ALBEF's) transforms do, where DeiT
          was trained with ImageNet's: set data.pixel_mean/std to image_ops.IMAGENET_* for
          those; its 14x14 position table resized to 16x16 for 256 px), the text tower from the
          first 6 layers of bert-base-uncased (model.text.init_first_layers) with its uncased
          WordPiece vocab.txt:
            model.image.init_from  timm:$W/deit_base_patch16_224.fb_in1k/model.safetensors
            model.text.init_from   hf:$W/bert-base-uncased/model.safetensors
            data.tokenizer.vocab_file  $W/bert-base-uncased/vocab.txt
          Without the files the run stops while validating, naming the field and the path.
  scratch the recipe at paper scale with both towers from scratch (set data.tokenizer.vocab_file).
  small   the demo's towers, data and budget (configs/demo.py: 600 steps of 512, its lr and
          warm-up) with ViCHA's parts: the demo's ViT has 4 blocks and its text tower 2 layers,
          so one level is aligned, ViT block 3 with text layer 1 (the last intermediate level
          of each); a 4-head 128-wide decoder; queues of 8 batches; alpha ramped over 100 steps.
          The concepts file defaults to <data.cache_dir>/vicha/demo_concepts.jsonl, built from a
          trained demo (the teacher):
            python -m vlalign.main --config=configs/demo.py --workdir=workdirs/demo
            python -m vlalign.tools.concepts --config=configs/demo.py --workdir=workdirs/demo \
                --output=$HOME/.cache/vlalign/vicha/demo_concepts.jsonl
  tiny    seconds-long variant for tests: demo tiny towers deepened to 2 blocks / 2 layers
          (level (1, 1)); set method.vicha.concepts_file (or method.vicha.use_concepts=False).
Facts marked (unverified): total steps, ramp length.
"""

import math
import os

import ml_collections

from vlalign import config_lib


def _load(name: str):
  return config_lib.load_config_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), name))


def vicha_method(config: ml_collections.ConfigDict, *, levels, queue_batches: int,
                 ramp_steps: int) -> None:
  """ViCHA's objective: m 0.995, alpha 0.4, hier weight 0.1 per level, MIM weight 1, 75%
  masking, concepts 4 of 15; a queue of `queue_batches` global batches."""
  config.method.name = 'vicha'
  config.method.vicha.update(momentum=0.995, alpha=0.4, distill_ramp_steps=ramp_steps,
                             queue_size=queue_batches * config.data.global_batch,
                             levels=levels, hier_weight=0.1, mim_weight=1.0, mask_ratio=0.75,
                             use_concepts=True, concepts_sample=4, max_logit_scale=1000.0)
  # ALBEF / ViCHA: learnable temperature from 0.07, the parameter clamped to [0.001, 0.5]
  # before every forward (gradient kept): here the log-scale is projected into
  # [ln 2, ln 1000] after every update (methods/logit_scale.py, optim.project_log_scale).
  config.model.temperature_init, config.model.learn_temperature = 0.07, True
  config.optimizer.log_scale_range = (math.log(2.0), math.log(1000.0))


def paper_config(pretrained: bool = True) -> ml_collections.ConfigDict:
  """ViT-B/16 (256 px) + 6-layer BERT-Base, embeddings 256, batch 128; `pretrained` starts from
  DeiT-B/16 and the first 6 layers of bert-base-uncased."""
  config = config_lib.base_config()
  d = config.data
  d.sources = ()  # set to your data, with data.tokenizer.vocab_file
  config.evals.heldout = False
  d.global_batch = 128
  d.image_size, d.resize_size, d.max_len = 256, 256, 30
  d.random_crop, d.flip = True, True
  m = config.model
  m.image = ml_collections.ConfigDict({'name': 'vit', 'patch': 16, 'width': 768, 'depth': 12,
                                       'num_heads': 12, 'mlp_ratio': 4.0, 'pool': 'cls',
                                       'stem': 'patch', 'dropout': 0.0})
  m.text = ml_collections.ConfigDict({'name': 'bert', 'size': 'base', 'depth': 6,
                                      'dropout': 0.1})
  m.embed_dim = 256
  m.image_projection, m.text_projection = 'linear_bias', 'linear_bias'
  m.vocab_size = 30_522  # BERT's uncased WordPiece vocabulary
  m.compute_dtype = 'bfloat16'
  # One epoch of ~1.1M pairs at batch 128 is ~8,600 steps; 10 epochs (unverified).
  config.total_steps = 86_000
  config.optimizer.update(name='adamw', lr=1e-4, warmup_steps=1_000, decay='cosine',
                          end_lr_factor=0.1, weight_decay=0.02, b1=0.9, b2=0.999, eps=1e-8,
                          grad_clip=0.0)
  vicha_method(config, levels=((7, 1), (8, 2), (9, 3), (10, 4), (11, 5)),
               queue_batches=512, ramp_steps=8_600)  # 512 x 128 = 65,536
  # ViCHA's decoder: 768 wide, 2 blocks, 16 heads, fixed sin-cos positions (pos_embed default).
  config.method.vicha.decoder.update(width=768, depth=2, num_heads=16)
  config.method.vicha.concepts_encoder.update(width=768, depth=2, num_heads=12)
  config.method.vicha.update(concepts_file='', concepts_len=30)
  config.log_every, config.checkpoint_every = 100, 2_000
  if pretrained:
    weights = _load('pretrained.py')
    weights.deit_b16(config)
    weights.bert_base_uncased(config)
    config.model.text.init_first_layers = True  # 6 of bert-base-uncased's 12 layers
  return config


def demo_config(tiny: bool) -> ml_collections.ConfigDict:
  """`small` / `tiny`: configs/demo.py with the ViCHA objective."""
  config = _load('demo.py').get_config('tiny' if tiny else 'v48')
  if tiny:
    config.model.image.update(depth=2)
    config.model.text.update(depth=2)
    vicha_method(config, levels=((1, 1),), queue_batches=3, ramp_steps=4)
    config.method.vicha.decoder.update(width=32, depth=2, num_heads=2)
    config.method.vicha.concepts_encoder.update(width=32, depth=2, num_heads=2)
    config.method.vicha.update(concepts_file='', concepts_len=8)
  else:
    vicha_method(config, levels=((3, 1),), queue_batches=8, ramp_steps=100)
    config.method.vicha.decoder.update(width=128, depth=2, num_heads=4)
    config.method.vicha.concepts_encoder.update(width=96, depth=2, num_heads=4)
    config.method.vicha.update(concepts_len=8, concepts_file=os.path.join(
        config.data.cache_dir, 'vicha', 'demo_concepts.jsonl'))
  return config


OPTIONS = ('scratch', 'small', 'tiny')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """ViCHA at paper scale; `small` / `tiny` on the embedded data (see the module docstring)."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  if args & {'small', 'tiny'}:
    return config_lib.finish(demo_config(tiny='tiny' in args))
  return config_lib.finish(paper_config(pretrained='scratch' not in args))
