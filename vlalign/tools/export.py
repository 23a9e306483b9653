"""Exports a vlalign workdir's newest checkpoint as another library's checkpoint.

python -m vlalign.tools.export --workdir=DIR --format=openclip|hf --output=OUT

python -m vlalign.tools.export --workdir=DIR --format=hf --tower=image|text --output=OUT

openclip: a model with a clip_vit or clip_resnet image tower and a clip_text tower ->
OUT/open_clip_model.safetensors and OUT/open_clip_config.json ({'model_cfg': ...}, what
open_clip's create_model reads), batch-norm statistics included.
hf: one tower -> OUT/model.safetensors and OUT/config.json: a Bert text tower as transformers'
BertModel, a ViT image tower (patch stem, class-token pooling) as ViTModel; --tower picks one
when the model has both (the towers' projection heads have no counterpart there).
The workdir's config comes from DIR/config.json (every run and tools/import_weights write it)
or --config.
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
  flags.DEFINE_enum('tower', 'auto', ['auto', 'image', 'text'], 'hf: the tower to export '
                    '(auto: the only one Hugging Face has a model for).')


def read_config(workdir: str, path: str = '') -> ml_collections.ConfigDict:
  """The workdir's resolved config from its config.json."""
  path = path or os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no config.json; pass --config=<config.json>')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _hf_tower(config, tower: str) -> str:
  """The tower --format=hf exports: `tower`, or with 'auto' the only one HF has a model for."""
  from vlalign.weights import common  # pylint: disable=import-outside-toplevel
  have = [t for t, name in (('image', 'vit'), ('text', 'bert'))
          if config.model[t].name == name]
  if tower == 'auto' and len(have) > 1:
    raise common.WeightsError('--format=hf: both towers have a Hugging Face model; pass '
                              '--tower=image or --tower=text')
  if tower == 'auto' and have:
    return have[0]
  if tower not in have:
    raise common.WeightsError(
        f'--format=hf: Hugging Face export writes a Bert text tower or a ViT image tower; this '
        f'model\'s image tower is {config.model.image.name!r}, its text tower '
        f'{config.model.text.name!r}')
  return tower


def export(workdir: str, fmt: str, output: str, config_path: str = '',
           tower: str = 'auto') -> list[str]:
  """Writes the checkpoint and config files of `fmt` into `output`; returns their paths."""
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from safetensors.numpy import save_file
  from vlalign.weights import common, load
  from vlalign.weights import export as mapping
  config = read_config(workdir, config_path)
  flat = load._workdir_variables(workdir)  # pylint: disable=protected-access
  if fmt == 'openclip':
    state = mapping.openclip_state(flat)
    lib_config = mapping.openclip_config(config.model, config.data.image_size,
                                         config.data.max_len)
  elif fmt == 'hf':
    tower = _hf_tower(config, tower)
    prefix = f'params/{tower}_tower/'
    params = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    if tower == 'text':
      state, lib_config = mapping.bert_state(params), mapping.bert_config(params,
                                                                         config.model.text)
    else:
      state = mapping.vit_state(params, config.model.image)
      lib_config = mapping.vit_config(params, config.model.image, config.data.image_size)
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
                                        FLAGS.config, FLAGS.tower)}))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
