"""ALIGN-L2-Large (Jia et al. 2021, the main model): EfficientNet-L2 (no top) + BERT-Large,
Linear 1024 -> 1376, parameters and optimizer state sharded over the mesh (FSDP).

get_config(arg): arg is a comma-separated list.
  (none)     the paper's model and recipe; needs real data (config.data.sources,
             config.data.tokenizer.vocab_file).
  runlocal   the same tower families scaled down, a few steps on the embedded data on a CPU.
"""

import os

from vlalign import config_lib


def _load_align_b7():
  """configs/align_b7.py (the shared ALIGN recipe), loaded by path like any config file."""
  return config_lib.load_config_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'align_b7.py'))


# FSDP: every large kernel and embedding table is split over the 'fsdp' axis on one dimension;
# norms, biases and small tensors are replicated, and so is a dimension the axis does not
# divide (parallel.param_shardings). With 16-way FSDP this shards 99% of L2-Large's parameters.
FSDP_RULES = (
    # Convs narrowing a 6x-expanded width split on their input channels (a multiple of 48).
    (r'(project_conv|reduce)/kernel$', (None, None, 'fsdp', None)),
    (r'(conv|expand)/kernel$', (None, None, None, 'fsdp')),
    (r'(query|key|value|out|fc1|fc2|proj)/kernel$', (None, 'fsdp')),
    (r'embed/embedding$', (None, 'fsdp')),
)


OPTIONS = ('runlocal',)


def get_config(arg: str = ''):
  """ALIGN-L2-Large; `runlocal` for a CPU-sized variant."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  align_b7 = _load_align_b7()
  config = align_b7.align_config('l2', 'large')
  config.model.remat = True
  config.mesh = {'data': -1, 'fsdp': 16}
  config.batch_axes = ('data', 'fsdp')
  config.partition_rules = FSDP_RULES
  if 'runlocal' in args:
    # Twice as wide and deep as align_b7:runlocal, rematerialised per block like the full one.
    align_b7.runlocal(config, 'l2', width=0.5, depth=0.6, text_depth=4)
    config.mesh = {'data': -1, 'fsdp': 1}
  return config_lib.finish(config)
