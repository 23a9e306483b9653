"""BriVL / WenLan (Huo et al. 2021): cross-modal MoCo with an EfficientNet image tower and a BERT
text tower (docs/METHODS.md section 4; vlalign/methods/brivl.py).

get_config(arg): arg is a comma-separated list.
  (none)  the recipe at paper scale: EfficientNet-B5 (no top) + BERT-Base (the released model
          uses RoBERTa-base; BERT-Base is the same size), embeddings of 2048, momentum encoders
          with m = 0.99, queues of K = 9,600 keys (10 global batches of 960), fixed tau = 0.07;
          needs real data: set config.data.sources.
          Starts from public checkpoints as the paper does (configs/pretrained.py has the
          download commands), read from $W = $VLALIGN_WEIGHTS (default
          ~/.cache/vlalign/weights):
          the image tower from timm's tf_efficientnet_b5.ns_jft_in1k (TF 'same' padding,
          ImageNet pixel stats; the classifier head is not used):
            model.image.init_from  timm:$W/tf_efficientnet_b5.ns_jft_in1k/model.safetensors
          BriVL's text encoder is a (Chinese) RoBERTa; vlalign maps no RoBERTa checkpoint (its
          byte-level BPE and position offset differ from BERT's), so the text tower starts from
          bert-base-uncased, the same size, with its uncased WordPiece vocab.txt:
            model.text.init_from   hf:$W/bert-base-uncased/model.safetensors
            data.tokenizer.vocab_file  $W/bert-base-uncased/vocab.txt
          For another language set both to a BERT of that language (any HF BERT folder).
          Without the files the run stops while validating, naming the field and the path.
  scratch the recipe at paper scale with both towers from scratch (set data.tokenizer.vocab_file).
  small   the demo's towers, data and budget (configs/demo.py: 600 steps of 512) with the BriVL
          objective, so its held-out numbers compare with the plain contrastive demo's; about
          10 minutes on 2 CPU cores.
  tiny    seconds-long variant of `small` for the tests.
Facts marked (unverified) in docs/METHODS.md section 4 stay config defaults: batch, image
size, optimizer.
"""

import os

import ml_collections

from vlalign import config_lib


def _load(name: str):
  return config_lib.load_config_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), name))


def brivl_method(config: ml_collections.ConfigDict, queue_batches: int) -> None:
  """Sets the BriVL objective: m = 0.99, tau = 0.07 fixed, a queue of `queue_batches` batches."""
  config.method.name = 'brivl'
  config.method.brivl.update(momentum=0.99, temperature=0.07,
                             queue_size=queue_batches * config.data.global_batch)
  # The objective uses method.brivl.temperature; the model's own is kept equal and fixed.
  config.model.temperature_init, config.model.learn_temperature = 0.07, False


def paper_config(pretrained: bool = True) -> ml_collections.ConfigDict:
  """EfficientNet-B5 + BERT-Base towers, 2048-d embeddings, K = 9,600; `pretrained` starts from
  tf_efficientnet_b5 (NoisyStudent) and bert-base-uncased."""
  config = _load('align_b7.py').align_config('b5', 'base')
  config.total_steps = 200_000  # (unverified)
  d = config.data
  d.global_batch = 960  # (unverified) K = 9,600 is 10 global batches
  d.image_size, d.resize_size = 380, 416  # (unverified)
  m = config.model
  m.embed_dim = 2048
  m.image_projection, m.text_projection = 'linear_bias', 'linear_bias'
  config.optimizer.update(name='adamw', lr=1e-4, warmup_steps=2_000, decay='cosine',
                          weight_decay=1e-5, b1=0.9, b2=0.98, eps=1e-6, grad_clip=1.0)
  brivl_method(config, queue_batches=10)
  if pretrained:
    weights = _load('pretrained.py')
    weights.tf_efficientnet(config, config.model.image.variant)
    weights.bert_base_uncased(config)
  return config


OPTIONS = ('scratch', 'small', 'tiny')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """BriVL at paper scale; `small` / `tiny` on the embedded data (see the module docstring)."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  if args & {'small', 'tiny'}:
    config = _load('demo.py').get_config('tiny' if 'tiny' in args else 'v48')
    brivl_method(config, queue_batches=8 if 'small' in args and 'tiny' not in args else 3)
    return config_lib.finish(config)
  return config_lib.finish(paper_config(pretrained='scratch' not in args))
