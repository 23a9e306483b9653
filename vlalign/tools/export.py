"""Exports a vlalign workdir's newest checkpoint as another library's checkpoint.

python -m vlalign.tools.export --workdir=DIR --format=openclip|hf --output=OUT

openclip: a model with clip_vit and clip_text towers -> OUT/open_clip_model.safetensors and
OUT/open_clip_config.json ({'model_cfg': ...}, what open_clip's create_model reads).
hf: the Bert text tower -> OUT/model.safetensors and OUT/config.json (transformers BertModel).
The workdir's config comes from DIR/config.json (written by tools/import_weights) or --config.
"""

import json
import os

from absl import app, flags
import ml_collections

FLAGS = flags.FLAGS
FILES = {'openclip': ('open_clip_model.safetensors', 'open_clip_config.json'),
         'hf': ('model.safetensors', 'config.json')}


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The vlalign workdir to export.')
  flags.DEFINE_enum('format', None, list(FILES), 'The library to export for.')
  flags.DEFINE_string('output', None, 'Directory for the checkpoint and its config.')
  flags.DEFINE_string('config', '', 'A config.json for the workdir (default: DIR/config.json).')


def read_config(workdir: str, path: str = '') -> ml_collections.ConfigDict:
  """The workdir's resolved config from its config.json."""
  path = path or os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no config.json; pass --config=<config.json>')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def export(workdir: str, fmt: str, output: str, config_path: str = '') -> list[str]:
  """Writes the checkpoint and config files of `fmt` into `output`; returns their paths."""
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from safetensors.numpy import save_file
  from vlalign.weights import common, load
  from vlalign.weights import export as mapping
  config = read_config(workdir, config_path)
  flat = load._workdir_variables(workdir)  # pylint: disable=protected-access
  params = {k[len('params/'):]: v for k, v in flat.items() if k.startswith('params/')}
  if fmt == 'openclip':
    state = mapping.openclip_state(params)
    lib_config = mapping.openclip_config(config.model, config.data.image_size,
                                         config.data.max_len)
  elif fmt == 'hf':
    if config.model.text.name != 'bert':
      raise common.WeightsError('export to hf writes the Bert text tower; this model\'s is '
                                f'{config.model.text.name!r}')
    tower = {k[len('text_tower/'):]: v for k, v in params.items() if k.startswith('text_tower/')}
    state, lib_config = mapping.bert_state(tower), mapping.bert_config(tower, config.model.text)
  else:
    raise common.WeightsError(f'--format must be one of {list(FILES)}, got {fmt!r}')
  os.makedirs(output, exist_ok=True)
  weights, cfg = (os.path.join(output, name) for name in FILES[fmt])
  save_file({k: np.array(v, order='C') for k, v in state.items()}, weights)
  with open(cfg, 'w') as f:
    json.dump(lib_config, f, indent=1)
  return [weights, cfg]


def main(argv) -> None:
  del argv
  for name in ('workdir', 'format', 'output'):
    if not getattr(FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  from vlalign import errors  # pylint: disable=import-outside-toplevel
  with errors.one_line('vlalign'):  # user-facing errors (weights, config, files): one line
    print(json.dumps({'written': export(FLAGS.workdir, FLAGS.format, FLAGS.output,
                                        FLAGS.config)}))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
