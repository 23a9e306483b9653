"""Converts a pretrained checkpoint (safetensors) into a vlalign workdir.

python -m vlalign.tools.import_weights --format=openclip|hf|timm --checkpoint=PATH \
    --output=DIR [--config=configs/demo.py] [--model_config=JSON] [--image_size=N]

Families: OpenCLIP ViT (whole model: both towers, their projections and the logit scale),
Hugging Face BERT (text tower), timm and Hugging Face ViT (image tower). The towers and sizes
come from the checkpoint (heads and QuickGELU from the library's JSON config, looked for next
to the checkpoint or given by --model_config); everything else from --config. Writes
DIR/config.json (the resolved config) and DIR/checkpoints/0 (the whole train state, as a run
saves it, readable by train.restore_for_inference); fine-tune with
`python -m vlalign.main --config=... --config.model.init_from=DIR --workdir=NEW`.
A tower the checkpoint does not hold keeps its random initialisation (listed in the log).
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
_DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'configs', 'demo.py')


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', _DEMO, 'Config the import completes (`path.py` or '
                                  '`path.py:arg`).', lock_config=True)
  flags.DEFINE_enum('format', None, ['openclip', 'hf', 'timm'], 'Checkpoint family.')
  flags.DEFINE_string('checkpoint', None, 'A .safetensors file (or a Hugging Face directory).')
  flags.DEFINE_string('output', None, 'The workdir to write.')
  flags.DEFINE_string('model_config', '', 'The library\'s JSON config (open_clip_config.json, '
                      'config.json); default: one next to the checkpoint.')
  flags.DEFINE_integer('image_size', 0, 'Image size of the vlalign model (position table '
                       'resized); 0: the checkpoint\'s.')


def _tokenizer(config):
  """The run's tokenizer when its file is at hand (the embedded default is generated), else
  None (a text tower from the checkpoint brings its own vocabulary size)."""
  # pylint: disable=import-outside-toplevel
  from vlalign import train
  from vlalign.data import tokenizers as tokenizers_lib
  path = tokenizers_lib.vocab_path(config.data)
  if path and not os.path.exists(path):
    return None
  return tokenizers_lib.make_tokenizer(config.data, path or train.prepare_data(config)['vocab'])


def import_checkpoint(config, fmt: str, path: str, output: str, model_config: str = '',
                      image_size: int = 0):
  """Writes the workdir `output` for the checkpoint; returns the config written."""
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  from vlalign import checkpoint, config_lib, optim, parallel, train
  from vlalign.data import pipeline
  from vlalign.data import tokenizers as tokenizers_lib
  from vlalign.models import two_tower
  from vlalign.weights import common, convert, load
  hints = common.read_json(model_config) if model_config else load.hints_for(path)
  towers = convert.configure(config, fmt, os.path.abspath(path), hints, image_size)
  config_lib.validate(config)
  tokenizer = _tokenizer(config)
  vocab = config.model.vocab_size or (tokenizer.vocab_size if tokenizer else 0)
  ids = tokenizers_lib.model_token_ids(tokenizer) if tokenizer else {}
  model = two_tower.build_model(config.model, vocab, config.data.max_len, **ids)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps,
                               optim.frozen_towers(config.model))
  state, _ = train.init_state(config, model, tx, parallel.make_mesh(config.mesh))
  output = os.path.abspath(output)
  manager = checkpoint.make_manager(os.path.join(output, 'checkpoints'), save_every=1, keep=None)
  start = pipeline.DataState.initial(len(config.data.sources)).to_vector()
  data = train.data_item(config, np.stack([start] * jax.process_count()))
  checkpoint.save(manager, 0, state, data, force=True)
  manager.wait_until_finished()
  with config.unlocked():  # the weights now live in the workdir
    config.model.init_from = ''
    for tower in ('image', 'text'):
      config.model[tower].init_from = ''
  with open(os.path.join(output, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  logging.info('imported the %s tower(s) of %s into %s', ' and '.join(towers), path, output)
  return config


def main(argv) -> None:
  del argv
  for name in ('format', 'checkpoint', 'output'):
    if not getattr(FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  from vlalign import errors  # pylint: disable=import-outside-toplevel
  with errors.one_line('vlalign'):  # user-facing errors (weights, config, files): one line
    config = import_checkpoint(FLAGS.config, FLAGS.format, FLAGS.checkpoint, FLAGS.output,
                               FLAGS.model_config, FLAGS.image_size)
  print(json.dumps({'output': os.path.abspath(FLAGS.output), 'image': config.model.image.name,
                    'text': config.model.text.name}))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
