"""DeCLIP (Li et al. 2022) with CLIP's modified ResNet-50 image tower and text transformer
(docs/METHODS.md section 3; vlalign/methods/declip.py; the recipe is configs/declip_vit_b32.py's).

get_config(arg): arg is a comma-separated list.
  (none)  the paper's towers and recipe: CLIP RN50 (224 px, attention pool, 1024-d output) + the
          CLIP text transformer projecting to 1024, DeCLIP's losses (0.4 / 0.2 / 0.2 / 0.2), a
          global text bank of 2,097,152 (DeCLIP: 65,536 per GPU), batch 4,096; needs real data
          (config.data.sources, config.data.tokenizer.vocab_file).
  small   the same tower families scaled down (a [1, 1, 1, 1] ResNet of width 16 with its
          batch norm and attention pool on 64-px images; a 2-layer, 128-wide causal CLIP text
          transformer) with the demo's data and budget; `tiny` shrinks it for tests.
"""

import os

import ml_collections

from vlalign import config_lib


def _declip():
  return config_lib.load_config_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'declip_vit_b32.py'))


OPTIONS = ('small', 'tiny')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """DeCLIP RN50; `small` / `tiny` on the embedded data (see the module docstring)."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  declip = _declip()
  if not args & {'small', 'tiny'}:
    image = ml_collections.ConfigDict({'name': 'clip_resnet', 'layers': (3, 4, 6, 3),
                                       'width': 64, 'output_dim': 1024, 'num_heads': 32})
    return config_lib.finish(declip.paper_config(image, embed_dim=1024))
  tiny = 'tiny' in args
  config = declip.demo_config(tiny)
  d, m = config.data, config.model
  d.image_size, d.resize_size = 64, 70  # the ResNet downsamples 32x: a 2 x 2 grid at the end
  width = 8 if tiny else 16
  m.embed_dim = 32 if tiny else 128
  m.image = ml_collections.ConfigDict({'name': 'clip_resnet', 'layers': (1, 1, 1, 1),
                                       'width': width, 'output_dim': m.embed_dim,
                                       'num_heads': 4})
  m.text = ml_collections.ConfigDict({'name': 'clip_text', 'width': 32 if tiny else 128,
                                      'depth': 1 if tiny else 2, 'num_heads': 2 if tiny else 4,
                                      'output_dim': m.embed_dim})
  m.image_projection, m.text_projection = 'none', 'none'
  return config_lib.finish(config)
