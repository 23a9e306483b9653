"""ALIGN-B7-Base (Jia et al. 2021): EfficientNet-B7 (no top) + BERT-Base, Linear 768 -> 640.

get_config(arg): arg is a comma-separated list.
  (none)     the paper's model and recipe; needs real data: set config.data.sources (e.g.
             'tfrecord:gs://bucket/pairs-*.tfrecord') and config.data.tokenizer.vocab_file
             (without them it stops at once, naming the field). ALIGN's frequency filters are on.
  runlocal   the same tower families scaled down, a few steps on the embedded data on a CPU.
"""

import ml_collections

from vlalign import config_lib
from vlalign.models import efficientnet


def align_config(image_variant: str, text_size: str) -> ml_collections.ConfigDict:
  """The ALIGN recipe (docs/METHODS.md section 1) with the named EfficientNet and BERT sizes."""
  config = config_lib.base_config()
  config.total_steps = 1_200_000
  d = config.data
  d.sources = ()  # your data and data.tokenizer.vocab_file (embedded shapes are no ALIGN data)
  # ALIGN's filters (docs/METHODS.md section 1); the two frequency rules need the corpus statistics
  # python -m vlalign.tools.convert writes (text_stats.json): set filters.stats_file to enable.
  d.filters.update(min_image_side=200, max_aspect_ratio=3.0, min_unigrams=3, max_unigrams=20)
  config.evals.heldout = False
  d.global_batch = 16_384  # 1024 TPUv3 cores x 16 pairs
  d.image_size, d.resize_size = 289, 346  # train: resize 346, random crop 289, flip
  d.random_crop, d.flip = True, True
  d.max_len = 64
  m = config.model
  m.image = ml_collections.ConfigDict({'name': 'efficientnet', 'variant': image_variant,
                                       'include_top': False, 'drop_path_rate': 0.2})
  m.text = ml_collections.ConfigDict({'name': 'bert', 'size': text_size, 'pooler': False,
                                      'dropout': 0.1})
  # The image embedding is the pooled last stage; the [CLS] output goes through a Linear.
  m.embed_dim = efficientnet.embedding_width(image_variant)
  m.image_projection, m.text_projection = 'none', 'linear_bias'
  m.vocab_size = 30_522  # BERT's WordPiece vocabulary (the paper built a 100k one)
  m.temperature_init, m.learn_temperature = 1.0, True
  m.compute_dtype = 'bfloat16'  # parameters stay float32; loss and softmax in float32
  config.loss.update(name='softmax', label_smoothing=0.1, reduction='sum')
  config.optimizer.update(name='lamb', lr=1e-3, warmup_steps=10_000, decay='linear',
                          end_lr_factor=0.0, weight_decay=1e-5, b1=0.9, b2=0.999, eps=1e-6,
                          grad_clip=0.0)  # LAMB's trust ratio; the paper states no clipping
  config.log_every = 100
  config.checkpoint_every = 5_000
  config.eval_every = 0
  return config


def runlocal(config: ml_collections.ConfigDict, image_variant: str, width: float, depth: float,
             text_depth: int) -> None:
  """Shrinks `config` in place to a few steps on the embedded data on a CPU: the EfficientNet
  with the given width / depth coefficients, a BERT of `text_depth` 64-wide layers."""
  config.total_steps = 6
  d = config.data
  d.sources = ('embedded',)
  d.filters.update(min_image_side=0, max_aspect_ratio=0.0, min_unigrams=0, max_unigrams=0)
  config.evals.heldout = True
  d.global_batch, d.image_size, d.resize_size, d.max_len = 32, 48, 52, 32
  d.embedded.update(train_sizes={'studio': 240, 'sketch': 160}, heldout_size=100, num_shards=4,
                    vocab_size=300)
  d.shuffle_buffer, d.eval_batch = 64, 50
  m = config.model
  m.image.update(width_coefficient=width, depth_coefficient=depth)
  m.text = ml_collections.ConfigDict({'name': 'bert', 'size': 'mini', 'depth': text_depth,
                                      'width': 64,
                                      'num_heads': 2, 'pooler': False, 'dropout': 0.1})
  m.embed_dim = efficientnet.embedding_width(image_variant, width)
  m.vocab_size = 0  # the embedded tokenizer's
  m.compute_dtype = 'float32'
  config.optimizer.update(warmup_steps=2)
  config.log_every = config.checkpoint_every = 2


OPTIONS = ('runlocal',)


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """ALIGN-B7-Base; `runlocal` for a CPU-sized variant."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  config = align_config('b7', 'base')
  if 'runlocal' in args:
    runlocal(config, 'b7', width=0.25, depth=0.3, text_depth=2)
  return config_lib.finish(config)
