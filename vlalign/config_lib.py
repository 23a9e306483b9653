"""Shared config defaults (one place) and validation before anything expensive starts."""

import importlib.util
import json
import os
import re
import types
from typing import Any, Sequence

import ml_collections

from vlalign.data import spec as data_spec
from vlalign.data.tokenizers import families as tokenizer_families
from vlalign.losses import api as losses_api
from vlalign.models import two_tower
from vlalign.models import clip as clip_towers
from vlalign.models import efficientnet
from vlalign.models import vit
from vlalign.weights import common as weights_common
from vlalign.weights import load as weights_load

OPTIMIZERS = ('adamw', 'lamb')
DECAYS = ('cosine', 'linear', 'constant')
LOSSES = losses_api.NAMES


def _data_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      # Training sources, by spec (data/sources.py): 'embedded', 'embedded:<name>',
      # 'tfrecord:<glob>', 'tfds:<name>[/<config>]:<split>', 'wds:<glob>' (img2dataset tars),
      # 'csv:<glob>' (OpenCLIP-style CSV/TSV of image paths and captions, read as data.csv says).
      'sources': ('embedded',),
      # csv: sources (data/source_kinds/csvfile.py): the header names of the image path and
      # caption columns, and the separator ('\t' as OpenCLIP's default, or ',').
      'csv': {'image_column': 'filepath', 'caption_column': 'title', 'separator': '\t'},
      # How several sources mix (data/pipeline.py): 'none' (one source), 'weighted' (per
      # example) or 'debiased' (ZeroVL: one source per global batch); weights default to the
      # sources' sizes.
      'mixing': 'none',
      'weights': (),
      # Feature names of tfrecord / tfds sources ('/' for a nested TFDS feature).
      'image_key': 'image',
      'text_key': 'text',
      'id_key': 'id',
      'tfds_data_dir': '',
      # Legacy name of data.tokenizer.vocab_file (WordPiece vocabulary); set one of the two.
      'vocab_file': '',
      # The tokenizer (data/tokenizers/; README "Choosing a tokenizer"); data.max_len is its
      # context length. kind: 'wordpiece' (BERT-format vocab.txt), 'bpe' (CLIP's byte-level
      # BPE: a merges file, default the CLIP file in vlalign/data/assets) or 'sentencepiece'
      # (a .model). vocab_file '' with wordpiece: the embedded data's learned vocabulary.
      # pad / unk / bos / eos / mask name the special tokens (looked up in the vocabulary by
      # name); '' takes the family's (wordpiece [PAD] [UNK] [CLS] [SEP] [MASK]; bpe pads with
      # id 0 '!', <start_of_text> <end_of_text>, no unk or mask; sentencepiece <pad> <unk>, no
      # bos, </s>, no mask). lower_case None: the family's (True, True, False).
      'tokenizer': {'kind': 'wordpiece', 'vocab_file': '',
                    'lower_case': ml_collections.FieldReference(None, field_type=bool),
                    'pad': '', 'unk': '', 'bos': '', 'eos': '', 'mask': ''},
      # ZeroVL's text augmentation: each word piece selected with this probability is masked
      # (1/2), replaced by a random piece (1/10) or deleted (data/views.py; 0: off, ZeroVL 0.2).
      'zerovl_text_aug': 0.0,
      # Captions longer than this (bytes) are skipped as text_too_long.
      'max_text_bytes': 4096,
      # Bounds on what a file may claim, checked before anything is read or decoded (each
      # rejection counted under its reason, data/filters.py): a TFRecord record, a tar member,
      # the nesting of a .json caption, an image's longer side over its shorter side.
      'max_record_bytes': 64 << 20,
      'max_member_bytes': 32 << 20,
      'max_json_depth': 32,
      'max_image_aspect': 20.0,
      # Training stops with one line naming the source and its skip counts when no batch comes
      # for this long (a source with no usable record: wrong image_key, all shards bad).
      'max_wait_seconds': 600.0,
      # ALIGN-style filters (data/filters.py); 0 turns a rule off.
      'filters': {'min_image_side': 0, 'max_aspect_ratio': 0.0, 'min_unigrams': 0,
                  'max_unigrams': 0, 'max_shared_text': 0, 'min_unigram_count': 0,
                  'stats_file': ''},
      'cache_dir': os.environ.get('VLALIGN_DATA_DIR', os.path.expanduser('~/.cache/vlalign')),
      'embedded': {'seed': 0, 'train_sizes': {'studio': 12000, 'sketch': 6000},
                   'heldout_size': 1200, 'noise_fraction': 0.25, 'num_shards': 8,
                   'vocab_size': 1000},
      'global_batch': 256,
      'image_size': 48,
      'resize_size': 52,
      # Per-channel pixel mean / std in 0..255 units (image_ops.normalize): the default maps
      # pixels to [-1, 1]; checkpoints trained otherwise need theirs (image_ops.CLIP_MEAN, ...).
      'pixel_mean': (127.5, 127.5, 127.5),
      'pixel_std': (127.5, 127.5, 127.5),
      'random_crop': True,
      'flip': False,
      # Probability that a training image is turned to grey (its caption still names colours):
      # those pairs can only be matched on shape, size and position.
      'grayscale': 0.0,
      # Training views of JPEGs larger than twice data.resize_size are decoded at the smallest
      # DCT scale (1/2, 1/4, 1/8) that still covers resize_size, then resized exactly: far
      # cheaper, pixels within a few levels of the full decode (image_ops.resized_crop).
      'dct_scaling': True,
      # The plain training view leaves the host as uint8 pixels (the crop rounded to 0..255 where
      # it was resampled) and is normalised by pixel_mean / pixel_std inside the train step, on
      # the accelerator: no float32 pass per pixel on the host, a quarter of the bytes to copy
      # (docs/BENCHMARKS.md, "Input pipeline throughput per core"). Off: float32 from the host.
      'uint8_batches': False,
      'max_len': 32,
      'shuffle_buffer': 4096,
      # Files read together (round-robin) as one group of the stream; the shuffle buffer stays
      # inside a group, and resume re-reads at most one group (data/groups.py).
      'cycle_length': 8,
      # 'native': tfrecord shards that pass a pre-check (framing, every record an Example) are
      # read, parsed and checked in the graph (TFRecordDataset, data/native_checks.py); others,
      # and all when data.filters needs a stats_file, by the Python reader. 'python': all by it.
      # 'graph': all in the graph with no pre-check (trusted shards; what service_address needs).
      'tfrecord_reader': 'native',
      # host:port of a tf.data service dispatcher (vlalign.tools.data_service): each source's
      # reading, checks, decoding and augmentation run on its workers ('' = on this host).
      'service_address': '',
      # How hosts split the input (multi-process runs): 'files' (each reads its own shards:
      # I/O scales, batches depend on the process count) or 'batch' (each reads the global
      # record stream and decodes its slice of every global batch: identical batches for any
      # process count, every host reads every record's bytes). See data/pipeline.py.
      'host_split': 'files',
      'prefetch': 2,
      'eval_batch': 250,
      # Extra training views a method asks for (data/views.py): a second augmented image
      # ('image2'), MLM-masked tokens + labels ('tokens_mlm', 'mlm_labels') and an EDA-augmented
      # caption ('tokens_eda'). The first image view is the plain train view above unless
      # image1_strong, which gives it image2's augmentation (an independent draw; DeCLIP).
      'views': {
          'image2': False, 'text_mlm': False, 'text_eda': False, 'image1_strong': False,
          # image2: random resized crop (area fraction range, aspect ratio 3/4..4/3), flip,
          # colour jitter (brightness / contrast / saturation strength; 0: off), grayscale and
          # Gaussian blur (sigma 0.1..2 px at 224 px, scaled to image_size) probabilities.
          'crop_scale': (0.2, 1.0), 'flip': True, 'color_jitter': 0.4, 'grayscale': 0.2,
          'blur': 0.5,
          # text_mlm: each word piece selected with mlm_prob; selected: 80% [MASK], 10% a random
          # piece, 10% kept. text_eda: one of synonym replacement / random swap / random deletion
          # chosen at random, with EDA's alpha (n = max(1, alpha * words) replacements or swaps;
          # deletion probability alpha per word).
          'mlm_prob': 0.15, 'eda_alpha': 0.1,
      },
  })


def _model_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'image': {'name': 'vit', 'patch': 8, 'width': 128, 'depth': 4, 'num_heads': 4,
                'mlp_ratio': 4.0, 'pool': 'cls', 'stem': 'patch',
                # How the conv/hybrid stems run their 3x3 convolutions: 'xla' (lax.conv) or
                # 'matmul' (im2col by slicing + one matmul; same parameters, much faster on
                # XLA:CPU: docs/BENCHMARKS.md, "Demo step").
                'stem_conv': 'xla', 'dropout': 0.0,
                # The encoder MLP's activation: 'gelu_tanh' (flax's default, vlalign's runs),
                # 'gelu' (exact: timm / HF ViTs) or 'quick_gelu' (OpenAI CLIP).
                'act': 'gelu_tanh',
                # Pretrained weights for this tower alone: '<format>:<path>' with format
                # openclip | hf | timm (README "Start from pretrained weights"); '' = none.
                'init_from': '',
                # False locks the tower (LiT): its parameters and batch-norm statistics stay
                # fixed and it has no optimizer state.
                'trainable': True,
                # FLIP: fraction of the patch tokens dropped at train time (a random subset
                # per example, [CLS] kept; none at eval). 'vit' and 'clip_vit' towers only.
                'patch_dropout': 0.0},
      'text': {'name': 'transformer', 'width': 128, 'depth': 3, 'num_heads': 4,
               'mlp_ratio': 4.0, 'dropout': 0.0, 'init_from': '', 'trainable': True,
               # True: a tower shallower than its init_from checkpoint takes the checkpoint's
               # first layers (ViCHA / ALBEF: 6 of BERT-Base's 12); False: a depth mismatch stops.
               'init_first_layers': False},
      # A whole two-tower model (towers, projections, temperature) to start from: a vlalign
      # workdir (e.g. one written by python -m vlalign.tools.import_weights), 'openclip:<path>'
      # or 'hf:<path>' (ALIGN); applied before the towers' own init_from; '' = none.
      'init_from': '',
      'embed_dim': 128,
      # How tower features reach embed_dim: 'linear', 'linear_bias' or 'none' (as they are).
      'image_projection': 'linear',
      'text_projection': 'linear',
      # Rows of the text tower's token table; 0 takes the tokenizer's vocabulary size.
      'vocab_size': 0,
      'temperature_init': 1.0,
      'learn_temperature': True,
      # Initial learnable logit bias (SigLIP: -10); None: the model has no bias parameter.
      'bias_init': ml_collections.FieldReference(None, field_type=float),
      'compute_dtype': 'float32',
      'remat': False,
  })


def _method_defaults() -> ml_collections.ConfigDict:
  """method.name and every method's own namespace, method.<name>.*, with the defaults its
  module declares (vlalign/methods/<name>.py defaults())."""
  from vlalign import methods  # pylint: disable=g-import-not-at-top
  spaces = {name: m.defaults() for name, m in methods.METHODS.items() if len(m.defaults())}
  return ml_collections.ConfigDict({'name': 'clip', **spaces})


def _loss_defaults() -> ml_collections.ConfigDict:
  """config.loss (read by the methods whose LOSS_FIELDS name its fields: clip, declip)."""
  # impl 'gather': b x B logits per device; 'blockwise': softmax in column chunks of `chunk`
  # (b x chunk logits), sigmoid round the device ring (b x b). Same values and gradients.
  return ml_collections.ConfigDict({'name': 'softmax', 'label_smoothing': 0.1,
                                    'reduction': 'sum', 'impl': 'gather', 'chunk': 1024})


def base_config() -> ml_collections.ConfigDict:
  """Every knob with its default; recipe configs override fields of this (it is locked)."""
  config = ml_collections.ConfigDict({
      'seed': 0,
      'total_steps': 1000,
      # Stop this invocation after this step (0: run to total_steps); the schedule still
      # follows total_steps, so a later start resumes exactly (used to test preemption).
      'stop_at_step': 0,
      'data': _data_defaults(),
      'model': _model_defaults(),
      'loss': _loss_defaults(),
      'optimizer': {'name': 'adamw', 'lr': 1e-3, 'warmup_steps': 100, 'decay': 'cosine',
                    'end_lr_factor': 0.0, 'weight_decay': 1e-4, 'b1': 0.9, 'b2': 0.98,
                    'eps': 1e-6, 'grad_clip': 1.0,
                    # (lo, hi): after every update the log-scale parameter is projected into
                    # [lo, hi] (DeCLIP [3, 6]; ALBEF / ViCHA [ln 2, ln 1000], their temperature
                    # in [0.001, 0.5]; OpenCLIP [0, ln 100]); (): no projection.
                    'log_scale_range': ()},
      # Mesh axis sizes; -1 takes the remaining devices. The batch is split over `batch_axes`.
      'mesh': {'data': -1},
      'batch_axes': ('data',),
      # (regex over '/'-joined parameter paths, PartitionSpec entries); unmatched -> replicated.
      'partition_rules': (),
      # On a non-finite loss, gradient or updated state the update is always dropped; 'stop'
      # then ends the run with an error, 'skip' goes on and counts it (train/skipped_steps).
      'nan_policy': 'stop',
      'log_every': 25,
      # MFU (train/mfu) needs the peak FLOP/s of one device: this value, or 0 for the built-in
      # bf16 table of known accelerators (vlalign/perf.py). FLOPs per step come from XLA.
      'peak_flops_per_device': 0.0,
      # A jax.profiler trace of steps [start_step, start_step + num_steps) into workdir/profile
      # (0: off).
      'profile': {'start_step': 0, 'num_steps': 3},
      'checkpoint_every': 200,
      # Newest checkpoints kept; 0 keeps every checkpoint.
      'keep_checkpoints': 3,
      'eval_every': 0,
      # A resumed run refuses a changed seed or data.global_batch (its streams and schedule
      # would silently differ from the run it continues) unless this is True.
      'resume_allow_changes': False,
      # Multi-process runs: the seconds a process waits for its peers at the per-step agreement
      # on stopping (preemption) before it gives up with one line (a peer died or hangs).
      'peer_timeout_s': 300,
      # Fault injection for testing the guards: the loss (and so every gradient) is NaN at
      # these 1-based steps.
      # record_example_ids: each step's example ids per host into
      # <workdir>/example_ids/process_<i>.jsonl (to audit what a run saw, resumes included).
      'debug': {'nan_loss_at_steps': (), 'record_example_ids': False},
      # The training objective's recipe (vlalign/methods/, the table methods.METHODS):
      # method.name 'clip' = the contrastive loss of config.loss on one view per modality
      # (with ZeroVL's mixup / grad_accum options); 'brivl' = cross-modal MoCo; 'declip' = MVS +
      # image SimSiam + MLM + nearest-neighbour supervision; 'vicha' = ALBEF-style ITC with
      # momentum distillation + hierarchical alignment + MAE + visual concept tokens. Each
      # method's hyperparameters are method.<name>.* (defaults in its module).
      'method': _method_defaults(),
      # ZeroVL's decoupled gradient accumulation (methods/zerovl.py): the global batch in
      # micro_batches two-pass micro-batches, the full-batch gradient with one micro-batch's
      # activation memory (1: off).
      'grad_accum': {'micro_batches': 1, 'unroll': False},
      # ZeroVL's coin-flipping mixup (methods/zerovl.py): lambda ~ Beta(beta, beta) per step,
      # a coin picks pixel-space image mixing or projected-text mixing. partner: each row is
      # mixed with its mirror within its 'micro_batch' (ZeroVL's accumulation runner; the
      # device's rows when grad_accum is off) or within the 'device' rows whatever the
      # accumulation (then accumulation does not change the objective).
      'mixup': {'enabled': False, 'beta': 0.1, 'partner': 'micro_batch'},
      # heldout: evaluate on the embedded held-out split (its attributes give zero-shot
      # labels); off for recipes that train on other data only.
      # datasets: evaluators on other sources (evaluate/datasets.py), e.g.
      # {'name': 'cifar10', 'kind': 'zeroshot', 'source': 'tfds:cifar10:test'}.
      'evals': {'heldout': True, 'datasets': (), 'retrieval': True,
                'zeroshot': ('color', 'shape', 'size')},
  })
  config.lock()
  return config


def load_config_module(path: str) -> types.ModuleType:
  """A config file (Python, run as code) loaded by path, as --config does; recipes use it to
  build on another recipe file (configs/align_l2.py on align_b7.py)."""
  name = os.path.splitext(os.path.basename(path))[0] + '_config'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def parse_variants(arg: str | None, options: Sequence[str], path: str) -> frozenset[str]:
  """The options of a config file's comma-separated `arg` (`configs/x.py:small,tiny`); an
  option not in `options` is a ConfigError naming the file (`path`, its __file__) and the valid
  options."""
  args = frozenset(a.strip() for a in (arg or '').split(',') if a.strip())
  unknown = sorted(args - set(options))
  if unknown:
    raise ConfigError(f'config file {os.path.basename(path)}: unknown option(s) {unknown} in '
                      f'{arg!r}; valid options: {", ".join(options) or "none"}')
  return args


def lock_all(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks `config` and every ConfigDict inside it, also those a recipe assigned whole after
  base_config() was locked (ml_collections' lock() stops at an already locked dict), so that
  setting an unknown field anywhere (e.g. model.image.patchsize) fails; returns `config`."""
  for value in config.values():
    if isinstance(value, ml_collections.ConfigDict):
      lock_all(value)
  return config.lock()


def finish(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A recipe file's last step (every configs/*.py get_config returns finish(config)): checks
  each tower sub-config's fields against its tower (ConfigError naming the field) and locks
  the whole tree (lock_all)."""
  for tower in ('image', 'text'):
    _check_tower_fields(config.model[tower], f'model.{tower}')
  return lock_all(config)


def check(cond: bool, field: str, msg: str) -> None:
  """Raises ConfigError('config.<field>: <msg>') unless `cond`."""
  if not cond:
    raise ConfigError(f'config.{field}: {msg}')


def check_choice(value: Any, field: str, choices) -> None:
  """`value` is one of `choices` (the field and the choices are named otherwise)."""
  check(value in choices, field, f'{value!r} is not one of {sorted(choices)}')


_check, _check_choice = check, check_choice


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad field; call before building anything. Checks run
  section by section in a fixed order: run length, data, model, loss and optimizer, runtime
  (partitioning, mesh, NaN policy, profiling), evaluations, accumulation and mixup, views,
  method."""
  _validate_run_length(config)
  _validate_data(config)
  _validate_data_sizes(config.data)
  _validate_model(config.model, config.data)
  _validate_init_from(config.model)
  _validate_loss_and_optimizer(config)
  _validate_runtime(config)
  _validate_evals(config.evals)
  _validate_accumulation(config)
  _validate_views(config.data.views)
  _validate_method(config)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value: Any, field: str, low: int) -> None:
  """An int >= low (the field is named in the error)."""
  _check(_is_int(value) and value >= low, field, f'must be an int >= {low}, got {value!r}')


check_int = _check_int


def _check_range(value: Any, field: str, low: float, high: float, high_open: bool = True) -> None:
  """A finite number in [low, high) (or [low, high])."""
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value and
        (value < high if high_open else value <= high))
  _check(ok, field, f'must be in [{low}, {high}{")" if high_open else "]"}, got {value!r}')


def _validate_run_length(config: ml_collections.ConfigDict) -> None:
  """Run length, logging, checkpointing and resume fields."""
  _check(_is_int(config.total_steps) and config.total_steps > 0, 'total_steps',
         f'must be a positive int, got {config.total_steps!r}')
  _check(_is_int(config.stop_at_step) and 0 <= config.stop_at_step <= config.total_steps,
         'stop_at_step', f'{config.stop_at_step} is not within [0, total_steps='
         f'{config.total_steps}]')
  _check(_is_int(config.seed) and 0 <= config.seed < 2**32, 'seed',
         f'must be an int in [0, 2**32), got {config.seed!r}')
  _check_int(config.log_every, 'log_every', 1)
  _check_int(config.checkpoint_every, 'checkpoint_every', 1)
  _check(_is_int(config.keep_checkpoints) and config.keep_checkpoints >= 0, 'keep_checkpoints',
         f'must be an int >= 0 (0 keeps every checkpoint), got {config.keep_checkpoints!r}')
  _check_int(config.eval_every, 'eval_every', 0)
  _check(isinstance(config.resume_allow_changes, bool), 'resume_allow_changes',
         'must be True or False')
  _check(isinstance(config.peer_timeout_s, (int, float)) and config.peer_timeout_s > 0,
         'peer_timeout_s', f'must be a positive number of seconds, got {config.peer_timeout_s!r}')
  for s in config.debug.nan_loss_at_steps:
    _check_int(s, 'debug.nan_loss_at_steps', 1)
  _check(isinstance(config.debug.record_example_ids, bool), 'debug.record_example_ids',
         'must be True or False')


def _validate_data_sizes(d: ml_collections.ConfigDict) -> None:
  """The data fields that size arrays, buffers and the generated embedded set."""
  _check_int(d.image_size, 'data.image_size', 1)
  _check_int(d.resize_size, 'data.resize_size', 1)
  _check_int(d.max_len, 'data.max_len', 3)
  _check_int(d.eval_batch, 'data.eval_batch', 1)
  _check_int(d.shuffle_buffer, 'data.shuffle_buffer', 1)
  _check_int(d.cycle_length, 'data.cycle_length', 1)
  _check_choice(d.tfrecord_reader, 'data.tfrecord_reader', ('native', 'python', 'graph'))
  _check(isinstance(d.service_address, str) and (
      not d.service_address or re.fullmatch(r'(grpc://)?[^\s:/]+:\d+', d.service_address)),
         'data.service_address', f'must be \'\' or host:port, got {d.service_address!r}')
  _check_int(d.prefetch, 'data.prefetch', 0)
  for name in ('random_crop', 'flip', 'dct_scaling', 'uint8_batches'):
    _check(isinstance(d[name], bool), f'data.{name}', f'must be True or False, got {d[name]!r}')
  e = d.embedded
  _check_int(e.seed, 'data.embedded.seed', 0)
  _check(len(e.train_sizes) > 0, 'data.embedded.train_sizes', 'must name at least one split')
  for name, size in e.train_sizes.items():
    _check_int(size, f'data.embedded.train_sizes.{name}', 1)
  _check_int(e.heldout_size, 'data.embedded.heldout_size', 1)
  _check_range(e.noise_fraction, 'data.embedded.noise_fraction', 0.0, 1.0)
  _check_int(e.num_shards, 'data.embedded.num_shards', 1)
  _check_int(e.vocab_size, 'data.embedded.vocab_size', 6)  # 5 reserved tokens and a word


def validate_model(config: ml_collections.ConfigDict) -> None:
  """The checks of `validate` that the model's shapes depend on (tools that only build the
  model, e.g. tools/summary on a paper config without data)."""
  _validate_data_sizes(config.data)
  _validate_model(config.model, config.data)


def _validate_csv(c: ml_collections.ConfigDict) -> None:
  """data.csv: two different non-empty column names and a tab or comma separator."""
  for name in ('image_column', 'caption_column'):
    _check(isinstance(c[name], str) and c[name].strip() != '', f'data.csv.{name}',
           f'must be a column name, got {c[name]!r}')
  _check(c.image_column != c.caption_column, 'data.csv.caption_column',
         f'{c.caption_column!r} is also data.csv.image_column')
  _check_choice(c.separator, 'data.csv.separator', ('\t', ','))


def _validate_data(config: ml_collections.ConfigDict) -> None:
  d = config.data
  _check(isinstance(d.sources, (tuple, list)) and len(d.sources) > 0, 'data.sources',
         f'must be a non-empty tuple of source specs (e.g. "tfrecord:gs://bucket/pairs-*", '
         f'"wds:/data/laion/*.tar", "embedded"), got {d.sources!r}')
  for spec in d.sources:
    try:
      data_spec.parse_spec(spec)
    except data_spec.DataError as e:
      raise ConfigError(str(e)) from e
  _validate_csv(d.csv)
  _validate_tokenizer(config)
  _check_choice(d.mixing, 'data.mixing', data_spec.MIXINGS)
  _check(d.mixing != 'none' or len(d.sources) == 1, 'data.mixing',
         f'"none" reads one source; data.sources has {len(d.sources)} (use "weighted" or '
         f'"debiased")')
  _check(not d.weights or (len(d.weights) == len(d.sources) and min(d.weights) > 0),
         'data.weights', f'{tuple(d.weights)} must be empty or one positive weight per source')
  for name in ('max_text_bytes', 'max_record_bytes', 'max_member_bytes', 'max_json_depth',
               'max_wait_seconds'):
    _check(d[name] > 0, f'data.{name}', f'must be positive, got {d[name]!r}')
  _check(d.max_image_aspect >= 1, 'data.max_image_aspect',
         f'{d.max_image_aspect!r} is below 1 (longer side over shorter side)')
  _check(0 <= d.zerovl_text_aug < 1, 'data.zerovl_text_aug',
         f'is a probability in [0, 1), got {d.zerovl_text_aug!r}')
  f = d.filters
  for name in ('min_image_side', 'max_aspect_ratio', 'min_unigrams', 'max_unigrams',
               'max_shared_text', 'min_unigram_count'):
    _check(f[name] >= 0, f'data.filters.{name}', f'must be >= 0 (0: off), got {f[name]!r}')
  _check(not f.max_aspect_ratio or f.max_aspect_ratio >= 1, 'data.filters.max_aspect_ratio',
         f'{f.max_aspect_ratio} is below 1 (longer side over shorter side)')
  _check(not (f.max_unigrams and f.min_unigrams > f.max_unigrams), 'data.filters.min_unigrams',
         f'{f.min_unigrams} is above data.filters.max_unigrams={f.max_unigrams}')
  _check(bool(f.stats_file) or not (f.max_shared_text or f.min_unigram_count),
         'data.filters.stats_file', 'is empty, but max_shared_text / min_unigram_count need '
         'corpus text statistics (text_stats.json, written by python -m vlalign.tools.convert)')
  _check(d.global_batch > 0, 'data.global_batch', 'must be positive')
  for field in ('pixel_mean', 'pixel_std'):
    v = d[field]
    _check(isinstance(v, (tuple, list)) and len(v) == 3
           and all(isinstance(x, (int, float)) for x in v), f'data.{field}',
           f'must be 3 numbers (0..255 units, one per RGB channel), got {v!r}')
  _check(all(x > 0 for x in d.pixel_std), 'data.pixel_std', f'must be positive, got {d.pixel_std!r}')
  _check(d.resize_size >= d.image_size, 'data.resize_size',
         f'{d.resize_size} is smaller than data.image_size={d.image_size}')
  _check(0.0 <= d.grayscale <= 1.0, 'data.grayscale', f'{d.grayscale} is not a probability')


def _validate_tokenizer(config: ml_collections.ConfigDict) -> None:
  """data.tokenizer: kind, its file (present when local), special names; data.max_len."""
  d, t = config.data, config.data.tokenizer
  _check_choice(t.kind, 'data.tokenizer.kind', tokenizer_families.KINDS)
  _check(not (t.vocab_file and d.vocab_file and t.vocab_file != d.vocab_file),
         'data.vocab_file', f'{d.vocab_file!r} differs from data.tokenizer.vocab_file='
         f'{t.vocab_file!r}; set only data.tokenizer.vocab_file')
  path = tokenizer_families.vocab_path(d)
  field = 'data.vocab_file' if d.vocab_file and not t.vocab_file else 'data.tokenizer.vocab_file'
  no_embedded = all(data_spec.parse_spec(x)[0] != 'embedded' for x in d.sources)
  _check(bool(path) or t.kind == 'wordpiece', field,
         f'is empty; a {t.kind} tokenizer needs its model file')
  _check(bool(path) or config.evals.heldout or not no_embedded, field,
         'is empty; set it to the WordPiece vocabulary of your data (python -m '
         'vlalign.tools.build_vocab) or BERT\'s vocab.txt')
  _check(not path or '://' in path or os.path.exists(path), field, f'{path} does not exist')
  for role in tokenizer_families.ROLES:
    _check(isinstance(t[role], str), f'data.tokenizer.{role}',
           f'must be a token name, got {t[role]!r}')
  s = tokenizer_families.settings(t)
  specials = int(bool(s['bos'])) + int(bool(s['eos']))
  _check(d.max_len >= specials + 1, 'data.max_len',
         f'{d.max_len} cannot hold the {t.kind} special tokens ({specials}) and a token')
  wants_mask = d.views.text_mlm or d.zerovl_text_aug > 0
  _check(bool(s['mask']) or not wants_mask, 'data.tokenizer.mask',
         f'is needed by data.views.text_mlm / data.zerovl_text_aug, but the {t.kind} family has '
         'no mask token; name one that is in the vocabulary')


# Tower fields that count something (>= 1); BERT's 0 takes its `size` preset's value.
_TOWER_COUNTS = ('patch', 'width', 'depth', 'num_heads', 'output_dim')
_HEADS_DIVIDE_WIDTH = ('vit', 'clip_vit', 'transformer', 'clip_text', 'bert')


def _validate_tower(t: ml_collections.ConfigDict, field: str) -> None:
  """Sizes, ratios and dropout rates of one tower's fields (those it has)."""
  low = 0 if t.name == 'bert' else 1
  for name in _TOWER_COUNTS:
    if name in t:
      _check_int(t[name], f'{field}.{name}', low)
  if 'layers' in t:
    _check(len(t.layers) > 0 and all(_is_int(n) and n >= 1 for n in t.layers),
           f'{field}.layers', f'must be block counts >= 1, got {tuple(t.layers)!r}')
  if 'mlp_ratio' in t:
    _check(t.mlp_ratio > 0, f'{field}.mlp_ratio', f'must be positive, got {t.mlp_ratio!r}')
  if 'dropout' in t and not (t.name == 'efficientnet' and t.dropout == -1):
    _check_range(t.dropout, f'{field}.dropout', 0.0, 1.0)
  if 'drop_path_rate' in t:
    _check_range(t.drop_path_rate, f'{field}.drop_path_rate', 0.0, 1.0)
  for name in ('width_coefficient', 'depth_coefficient'):
    if name in t:
      _check(t[name] >= 0, f'{field}.{name}', f'must be >= 0 (0: the variant\'s), got {t[name]!r}')
  if t.name in _HEADS_DIVIDE_WIDTH and t.get('width') and t.get('num_heads'):
    _check(t.width % t.num_heads == 0, f'{field}.num_heads',
           f'{t.num_heads} does not divide {field}.width={t.width}')


def _check_tower_fields(t: ml_collections.ConfigDict, field: str) -> None:
  """Every key of a tower sub-config is a field of its tower (typos such as
  model.image.patchsize are named, not passed on to the tower's constructor)."""
  towers = two_tower.IMAGE_TOWERS if field.endswith('image') else two_tower.TEXT_TOWERS
  _check_choice(t.get('name'), f'{field}.name', towers)
  known = two_tower.tower_fields(t.name)
  for key in t:
    _check(key in known, f'{field}.{key}',
           f'is not a field of the {t.name!r} tower (config.{field}.name); its fields: '
           f'{", ".join(sorted(known))}')


def _validate_model(m: ml_collections.ConfigDict, d: ml_collections.ConfigDict) -> None:
  _check_choice(m.image.get('name'), 'model.image.name', two_tower.IMAGE_TOWERS)
  _check_choice(m.text.get('name'), 'model.text.name', two_tower.TEXT_TOWERS)
  _validate_patch_dropout(m.image)  # before the field check: names the field, not the tower
  _check_tower_fields(m.image, 'model.image')
  _check_tower_fields(m.text, 'model.text')
  _check_choice(m.compute_dtype, 'model.compute_dtype', two_tower.DTYPES)
  _validate_tower(m.image, 'model.image')
  _validate_tower(m.text, 'model.text')
  _check_int(m.embed_dim, 'model.embed_dim', 1)
  for name in ('learn_temperature', 'remat'):
    _check(isinstance(m[name], bool), f'model.{name}', f'must be True or False, got {m[name]!r}')
  if m.image.name in ('vit', 'clip_vit'):
    _check(d.image_size % m.image.patch == 0, 'model.image.patch',
           f'{m.image.patch} does not divide data.image_size={d.image_size}')
  if m.image.name == 'vit':
    _check_choice(m.image.stem, 'model.image.stem', ('patch', 'conv', 'hybrid'))
    k = vit.HYBRID_PATCHIFY
    _check(m.image.stem != 'hybrid' or m.image.patch >= 2 * k, 'model.image.stem',
           f'"hybrid" (a {k}x{k} patchify, then stride-2 convolutions) needs model.image.patch '
           f'>= {2 * k}, got {m.image.patch}')
    _check_choice(m.image.pool, 'model.image.pool', ('cls', 'mean'))
    _check_choice(m.image.get('stem_conv', 'xla'), 'model.image.stem_conv', vit.STEM_CONVS)
    _check_choice(m.image.get('act', 'gelu_tanh'), 'model.image.act', vit.ACTIVATIONS)
  if m.image.name == 'efficientnet':
    _check_choice(m.image.get('padding', 'same'), 'model.image.padding', efficientnet.PADDINGS)
  if m.text.name == 'clip_text':
    _check_choice(m.text.get('pool', 'last'), 'model.text.pool', clip_towers.POOLS)
  for tower in ('image', 'text'):
    _check_choice(m[f'{tower}_projection'], f'model.{tower}_projection', two_tower.PROJECTIONS)
  _check(m.vocab_size >= 0, 'model.vocab_size', 'must be 0 (the tokenizer\'s) or positive')
  _check(m.temperature_init > 0, 'model.temperature_init', 'must be positive')
  _check(m.bias_init is None or abs(m.bias_init) < float('inf'), 'model.bias_init',
         f'must be None (no bias) or a finite number, got {m.bias_init!r}')


def _check_weights_file(path: str, field: str) -> None:
  _check(os.path.exists(path), field, f'{path} does not exist')
  _check(not path.endswith(weights_common.PICKLE_SUFFIXES), field,
         f'{path} is a pickle checkpoint, which vlalign does not read; '
         f'{weights_common.CONVERT_HINT}')


def _validate_init_from(m: ml_collections.ConfigDict) -> None:
  """Pretrained weights: well-formed specs whose files exist (seconds, before any build)."""
  for tower in ('image', 'text'):
    field = f'model.{tower}.init_from'
    spec = m[tower].get('init_from', '')
    _check(isinstance(m[tower].get('trainable', True), bool), f'model.{tower}.trainable',
           'must be True or False')
    _check(isinstance(m[tower].get('init_first_layers', False), bool),
           f'model.{tower}.init_first_layers', 'must be True or False')
    if not spec:
      continue
    fmt, _, path = spec.partition(':')
    _check(fmt in weights_load.FORMATS and bool(path), field,
           f'{spec!r} is not "<format>:<path>" with format one of {weights_load.FORMATS}')
    _check(tower == 'image' or fmt != 'timm', field, 'format "timm" holds image towers only')
    _check_weights_file(path, field)
  spec = m.get('init_from', '')
  if spec and not os.path.isdir(spec):
    fmt, _, path = spec.partition(':')
    _check(fmt in ('openclip', 'hf') and bool(path), 'model.init_from',
           f'{spec!r} is neither a vlalign workdir nor "openclip:<path>" / "hf:<path>" (ALIGN)')
    _check_weights_file(path, 'model.init_from')
  elif spec:
    _check(os.path.isdir(os.path.join(spec, 'checkpoints')), 'model.init_from',
           f'{spec} holds no checkpoints/ directory (a vlalign workdir is expected)')


def _validate_patch_dropout(image: ml_collections.ConfigDict) -> None:
  p = image.get('patch_dropout', 0.0)
  _check(isinstance(p, (int, float)) and 0 <= p < 1, 'model.image.patch_dropout',
         f'must be in [0, 1), got {p!r}')
  _check(p == 0 or image.name in ('vit', 'clip_vit'), 'model.image.patch_dropout',
         f'only the "vit" and "clip_vit" image towers drop patches, not {image.name!r}')


def _validate_loss_and_optimizer(config: ml_collections.ConfigDict) -> None:
  o = config.optimizer
  _check_choice(config.loss.name, 'loss.name', LOSSES)
  _check_choice(config.loss.reduction, 'loss.reduction', ('sum', 'mean'))
  _check(0.0 <= config.loss.label_smoothing < 1.0, 'loss.label_smoothing', 'must be in [0, 1)')
  _check_choice(config.loss.impl, 'loss.impl', losses_api.IMPLS)
  _check(isinstance(config.loss.chunk, int) and config.loss.chunk > 0, 'loss.chunk',
         f'must be a positive int, got {config.loss.chunk!r}')
  _check_choice(o.name, 'optimizer.name', OPTIMIZERS)
  _check_choice(o.decay, 'optimizer.decay', DECAYS)
  _check(0 <= o.warmup_steps <= config.total_steps, 'optimizer.warmup_steps',
         f'{o.warmup_steps} is not within [0, total_steps={config.total_steps}]')
  _check(0 < o.lr < float('inf'), 'optimizer.lr', f'must be positive and finite, got {o.lr!r}')
  _check_int(o.warmup_steps, 'optimizer.warmup_steps', 0)
  _check_range(o.end_lr_factor, 'optimizer.end_lr_factor', 0.0, 1.0, high_open=False)
  _check_range(o.weight_decay, 'optimizer.weight_decay', 0.0, float('inf'))
  for name in ('b1', 'b2'):
    _check_range(o[name], f'optimizer.{name}', 0.0, 1.0)
  # eps = 0 divides 0 by 0 for a parameter whose gradient is 0 (adam's m / (sqrt(v) + eps)).
  _check(0 < o.eps < 1, 'optimizer.eps', f'must be in (0, 1), got {o.eps!r}')
  _check_range(o.grad_clip, 'optimizer.grad_clip', 0.0, float('inf'))
  _validate_log_scale_range(o.log_scale_range)


def _validate_log_scale_range(bounds) -> None:
  _check(len(bounds) in (0, 2) and (not bounds or bounds[0] < bounds[1]),
         'optimizer.log_scale_range', f'must be () or (lo, hi) with lo < hi, got {bounds!r}')


def _validate_runtime(config: ml_collections.ConfigDict) -> None:
  for i, rule in enumerate(config.partition_rules):
    _check(len(rule) == 2, f'partition_rules[{i}]', 'must be (regex, spec)')
    try:
      re.compile(rule[0])
    except re.error as e:
      raise ConfigError(f'config.partition_rules[{i}]: bad regex {rule[0]!r}: {e}') from e
  for axis, size in config.mesh.items():
    _check(_is_int(size) and (size == -1 or size >= 1), f'mesh.{axis}',
           f'must be -1 (the remaining devices) or an int >= 1, got {size!r}')
  _check(len(config.batch_axes) > 0, 'batch_axes', 'must name at least one mesh axis')
  for axis in config.batch_axes:
    _check(axis in config.mesh, 'batch_axes', f'axis {axis!r} is not in config.mesh')
  _check_choice(config.nan_policy, 'nan_policy', ('stop', 'skip'))
  _check(config.peak_flops_per_device >= 0, 'peak_flops_per_device', 'must be >= 0 (0: table)')
  _check_int(config.profile.start_step, 'profile.start_step', 0)
  _check_int(config.profile.num_steps, 'profile.num_steps', 1)


def _validate_evals(evals: ml_collections.ConfigDict) -> None:
  names = set()
  from vlalign.evaluate import benchmarks  # pylint: disable=g-import-not-at-top
  for i, entry in enumerate(evals.datasets):
    field = f'evals.datasets[{i}]'
    if hasattr(entry, 'get'):  # a benchmark preset fills kind, source, ...
      try:
        entry = benchmarks.with_preset(entry)
      except ValueError as e:
        raise ConfigError(f'config.{field}.benchmark: {e}') from None
    _check(hasattr(entry, 'get') and entry.get('name') and entry.get('name') not in names and
           entry.get('name') not in ('heldout', 'retrieval', 'zeroshot') and
           '/' not in entry.get('name'), field,
           f'needs a unique "name" (not heldout/retrieval/zeroshot, no "/"), got {entry!r}')
    names.add(entry['name'])
    _check_choice(entry.get('kind'), f'{field}.kind', ('zeroshot', 'retrieval', 'linear_probe'))
    source = entry.get('source', '')
    if entry['kind'] == 'retrieval' and source.startswith('karpathy:'):
      continue  # a folder with a Karpathy split file (evaluate/datasets.read_karpathy)
    try:
      data_spec.parse_spec(source if source != 'embedded:heldout' else 'embedded')
    except data_spec.DataError as e:
      raise ConfigError(f'config.{field}.source: {e}') from e
  for name in evals.zeroshot:
    _check_choice(name, 'evals.zeroshot', ('color', 'shape', 'size'))
  for name in ('heldout', 'retrieval'):
    _check(isinstance(evals[name], bool), f'evals.{name}', 'must be True or False')


def _validate_accumulation(config: ml_collections.ConfigDict) -> None:
  d = config.data
  g = config.grad_accum.micro_batches
  _check(isinstance(g, int) and g >= 1, 'grad_accum.micro_batches',
         f'must be an int >= 1, got {g!r}')
  _check(g == 1 or config.method.name == 'clip', 'grad_accum.micro_batches',
         f'decoupled accumulation works with method "clip" (the config.loss objective), not '
         f'{config.method.name!r}')
  _check(not config.mixup.enabled or config.method.name == 'clip', 'mixup.enabled',
         f'mixup works with method "clip" (the config.loss objective), not '
         f'{config.method.name!r}')
  _check(isinstance(config.grad_accum.unroll, bool), 'grad_accum.unroll', 'must be True or False')
  _check(isinstance(config.mixup.enabled, bool), 'mixup.enabled', 'must be True or False')
  _check(config.mixup.beta > 0, 'mixup.beta', f'must be positive, got {config.mixup.beta!r}')
  _check_choice(config.mixup.partner, 'mixup.partner', ('micro_batch', 'device'))
  _check(d.global_batch % g == 0, 'grad_accum.micro_batches',
         f'{g} does not divide data.global_batch={d.global_batch}')


def _validate_views(v: ml_collections.ConfigDict) -> None:
  for name in ('image2', 'text_mlm', 'text_eda', 'image1_strong', 'flip'):
    _check(isinstance(v[name], bool), f'data.views.{name}', f'must be True or False, got {v[name]!r}')
  scale = tuple(v.crop_scale)
  _check(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, 'data.views.crop_scale',
         f'must be (low, high) with 0 < low <= high <= 1, got {tuple(v.crop_scale)!r}')
  _check(0 <= v.color_jitter < 1, 'data.views.color_jitter', 'must be in [0, 1)')
  for name in ('grayscale', 'blur'):
    _check(0 <= v[name] <= 1, f'data.views.{name}', f'is a probability, got {v[name]!r}')
  _check(0 < v.mlm_prob < 1, 'data.views.mlm_prob', f'must be in (0, 1), got {v.mlm_prob!r}')
  _check(0 < v.eda_alpha < 1, 'data.views.eda_alpha', f'must be in (0, 1), got {v.eda_alpha!r}')


def _validate_method(config: ml_collections.ConfigDict) -> None:
  """method.name from the method table (vlalign/methods), the views its data needs, then the
  method's own checks (its module's validate)."""
  from vlalign import methods  # pylint: disable=g-import-not-at-top
  me = config.method
  _check_choice(me.name, 'method.name', methods.METHODS)
  method = methods.get_method(me.name)
  for name, other in methods.METHODS.items():
    if name != me.name and name in me:
      _check_unchanged(me[name], other.defaults(), f'method.{name}',
                       f'is a setting of method "{name}", but method.name is "{me.name}"')
  ignored = [k for k in _loss_defaults() if k not in method.loss_fields]
  _check_unchanged(config.loss, _loss_defaults(), 'loss',
                   f'is ignored by method "{me.name}" (its objective does not read config.loss.'
                   f'{{{", ".join(ignored)}}})', only=ignored)
  for view in method.data_needs(config).views:
    _check(config.data.views[view], f'data.views.{view}',
           f'must be True for method.name="{me.name}" (it trains on that view)')
  method.validate(config)


def _check_unchanged(values: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict,
                     field: str, why: str, only=None) -> None:
  """Every field of `values` (or of `only`) still equals `defaults`; else ConfigError naming the
  first changed one and `why`."""
  for key in (defaults if only is None else only):
    value, default = values[key], defaults[key]
    if isinstance(default, ml_collections.ConfigDict):
      _check_unchanged(value, default, f'{field}.{key}', why)
    else:
      _check(_tuples(value) == _tuples(default), f'{field}.{key}',
             f'{value!r} {why}; leave it at its default {default!r}')


def check_queue(size: Any, field: str, batch: int, least: int = 1) -> None:
  """A bank / queue size: a multiple of data.global_batch holding at least `least` batches."""
  _check(_is_int(size) and size >= least * batch and size % batch == 0, field,
         f'{size!r} must be a multiple of data.global_batch={batch}' +
         (f' and at least {least} x global_batch' if least > 1 else ' (positive)'))


def tower_depth(tower: ml_collections.ConfigDict) -> int:
  """A text / image tower's block count (BERT's from its size preset when depth is 0)."""
  if tower.name == 'bert':
    from vlalign.models import bert  # pylint: disable=g-import-not-at-top
    return tower.get('depth') or bert.SIZES[tower.get('size', 'base')][0]
  return tower.depth


# Fields whose keys a recipe chooses (a whole dict is assigned, as `config.mesh = {...}` or a
# tower's own fields in `config.model.image = {...}`); every other ConfigDict in config.json
# must use base_config()'s keys.
FREE_MAPPINGS = ('mesh', 'data.embedded.train_sizes', 'model.image', 'model.text')


def to_json(config: ml_collections.ConfigDict) -> str:
  """The config as JSON text (tuples as lists); from_json reads it back."""
  return json.dumps(config.to_dict(), indent=1, sort_keys=True)


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples configs use, recursively (dicts keep their keys)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def _merge(config: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
  for key, value in values.items():
    field = prefix + key
    if key not in config:
      raise ConfigError(f'config.{field}: not a config field (written by another version?)')
    current = config[key]
    if isinstance(current, ml_collections.ConfigDict) and field not in FREE_MAPPINGS:
      if not isinstance(value, dict):
        raise ConfigError(f'config.{field}: expected a mapping in config.json, got {value!r}')
      _merge(current, value, field + '.')
      continue
    try:
      config[key] = _tuples(value)
    except (TypeError, ValueError) as e:
      raise ConfigError(f'config.{field}: {value!r} does not fit ({e})') from None


def _upgrade_method(values: dict) -> dict:
  """config.json written before per-method namespaces held every method's fields flat in
  `method`: the run's own method's move to method.<name>.*, the others' (unused by that run)
  are dropped."""
  from vlalign import methods  # pylint: disable=g-import-not-at-top
  me = values.get('method')
  if not isinstance(me, dict):
    return values
  flat = {k for k in me if k != 'name' and k not in methods.METHODS}
  if not flat:
    return values
  name = me.get('name', 'clip')
  own = methods.METHODS[name].defaults() if name in methods.METHODS else {}
  upgraded = {k: v for k, v in me.items() if k not in flat}
  moved = {k: me[k] for k in flat if k in own}
  if moved:
    upgraded[name] = {**upgraded.get(name, {}), **moved}
  return {**values, 'method': upgraded}


def from_json(text: str) -> ml_collections.ConfigDict:
  """A locked ConfigDict on base_config() with the values of to_json's text."""
  try:
    values = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f'config.json: not JSON ({e})') from None
  if not isinstance(values, dict):
    raise ConfigError('config.json: the top level must be an object of config fields')
  config = base_config()
  _merge(config, _upgrade_method(values), '')
  return lock_all(config)


def save_json(config: ml_collections.ConfigDict, path: str) -> None:
  """Writes to_json(config) to `path` (local or gs://, atomically where the file system allows)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(os.path.dirname(path) or '.')
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(to_json(config))
  tf.io.gfile.rename(tmp, path, overwrite=True)


def load_json(path: str) -> ml_collections.ConfigDict:
  """from_json of the file at `path` (e.g. <workdir>/config.json); ConfigError names it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    raise ConfigError(f'{path} does not exist: the workdir was not written by a run that saves '
                      f'its config (pass --config=...)')
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    return from_json(text)
  except ConfigError as e:
    raise ConfigError(f'{path}: {e}') from None
