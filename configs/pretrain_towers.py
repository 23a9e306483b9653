"""Unimodal pretraining of the demo's towers on the embedded data, with no cross-modal signal:
the image tower by SimSiam on two views of each image, the text tower by masked language
modelling on its captions. The data-efficiency benchmark's `pretrained` regime starts every
recipe's towers from this run (benchmarks/data_efficiency.py, docs/DATA_EFFICIENCY.md).

It is the DeCLIP objective of configs/declip_vit_b32.py:small (the demo's 48-px towers) with the
weights of its two cross-modal losses at 0: method.declip.weights = {mvs: 0, nns: 0, iss: 1,
tss: 1}.
vlalign/methods/declip.py still computes MVS and NNS (and fills the text bank) but the total is
sum_k weights[k] * loss_k, so a weight of 0 sends no gradient through them:
  - iss (SimSiam) reads only the two image views (z1, z2 -> projector -> predictor);
  - tss (MLM) reads only the text tower's token outputs of the masked caption and its labels;
so the image tower's gradient depends on images alone and the text tower's on captions alone,
and which caption goes with which image (the pairing) never reaches a parameter. The logit
scale and the text projection receive no gradient. tests/benchmarks/test_pretrain_towers.py
checks that the loss's gradient w.r.t. the other modality's input is exactly 0 and that
permuting the captions against the images leaves the gradients unchanged. The images and the
captions are those of the full embedded training set, used as two unpaired collections (as
unimodal pretraining data is abundant; the benchmark's `quarter` limits only the aligned pairs).

get_config(arg): arg is a comma-separated list of options:
  (none)  120 steps x 256 (60% of the benchmark's alignment budget of 200 x 256; about 2 min
          on 2 idle cores), lr 3e-3 (the demo's) after 10 warm-up steps, evaluated once at the
          end (its held-out retrieval and zero-shot numbers stay near chance: nothing aligns the
          towers); the run the benchmark takes the text tower from.
  image   the same at lr 1e-4: the run the benchmark takes the image tower from. At the
          demo's 3e-3 SimSiam collapses (2026-12-02, seed 0, 300 held-out images: the tower's
          features have mean pairwise cosine 0.99999 and per-dimension std 0.0003; 3e-4: 0.964 /
          0.015; 1e-4: 0.925 / 0.022; a CLIP-trained tower: 0.42 / 0.066), while MLM needs the
          higher rate (masked-token accuracy at step 120: 0.55 at 3e-3, 0.19 at 1e-4), so the
          text tower comes from the default run.
  tiny    a seconds-long variant for the tests (configs/demo.py:tiny towers).
"""

import os

import ml_collections

from vlalign import config_lib

OPTIONS = ('image', 'tiny')


def _declip(arg: str) -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'declip_vit_b32.py')
  return config_lib.load_config_module(path).get_config(arg)


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """SimSiam (image) + MLM (text) pretraining of the demo's towers (see the module docstring)."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  config = _declip('tiny' if 'tiny' in args else 'small')
  config.method.declip.weights.update(mvs=0.0, nns=0.0, iss=1.0, tss=1.0)
  if 'tiny' not in args:
    config.total_steps = 120
    config.data.global_batch = 256
    config.method.declip.bank_size = 2 * 256  # NNS is off: the smallest bank validation allows
    config.optimizer.warmup_steps = 10
    config.checkpoint_every = 120
    config.log_every = 10
  if 'image' in args:
    config.optimizer.lr = 1e-4
  return config_lib.finish(config)
