"""Exports a vlalign workdir's newest checkpoint as another library's checkpoint.

python -m vlalign.tools.export --workdir=DIR --format=openclip|hf|timm --output=OUT

python -m vlalign.tools.export --workdir=DIR --format=hf --tower=image|text --output=OUT

openclip: a model with a clip_vit or clip_resnet image tower and a clip_text tower ->
OUT/open_clip_model.safetensors and OUT/open_clip_config.json ({'model_cfg': ...}, what
open_clip's create_model reads), batch-norm statistics included.
hf: OUT/model.safetensors and OUT/config.json: an EfficientNet (padding='hf') + Bert model with
ALIGN's head as transformers' AlignModel (the default for that pair); or one tower: a Bert text
tower as BertModel, a ViT image tower (patch stem, class-token pooling) as ViTModel, an
EfficientNet image tower as AlignVisionModel; --tower picks one (the towers' projection heads
have no counterpart there).
timm: an EfficientNet image tower (TF 'same' padding) -> OUT/model.safetensors and
OUT/config.json as timm's tf_efficientnet_<variant> (batch-norm statistics included).
The workdir's config comes from DIR/config.json (every run and tools/import_weights write it)
or --config.
"""

import json
import os

from absl import app, flags
import ml_collections

FLAGS = flags.FLAGS
FILES = {'openclip': ('open_clip_model.safetensors', 'open_clip_config.json'),
         'hf': ('model.safetensors', 'config.json'), 'timm': ('model.safetensors', 'config.json')}


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The vlalign workdir to export.')
  flags.DEFINE_enum('format', None, list(FILES), 'The library to export for.')
  flags.DEFINE_string('output', None, 'Directory for the checkpoint and its config.')
  flags.DEFINE_string('config', '', 'A config.json for the workdir (default: DIR/config.json).')
  flags.DEFINE_enum('tower', 'auto', ['auto', 'image', 'text'], 'hf: the tower to export '
                    '(auto: the only one Hugging Face has a model for, or an EfficientNet + '
                    'Bert model as AlignModel).')


def read_config(workdir: str, path: str = '') -> ml_collections.ConfigDict:
  """The workdir's resolved config from its config.json."""
  path = path or os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no config.json; pass --config=<config.json>')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _hf_tower(config, tower: str) -> str:
  """The part --format=hf exports: 'model' (an EfficientNet + Bert model as AlignModel, with
  'auto'), `tower`, or with 'auto' the only tower HF has a model for."""
  from vlalign.weights import common  # pylint: disable=import-outside-toplevel
  image, text = config.model.image.name, config.model.text.name
  if tower == 'auto' and image == 'efficientnet' and text == 'bert':
    return 'model'
  have = [t for t, names in (('image', ('vit', 'efficientnet')), ('text', ('bert',)))
          if config.model[t].name in names]
  if tower == 'auto' and len(have) > 1:
    raise common.WeightsError('--format=hf: both towers have a Hugging Face model; pass '
                              '--tower=image or --tower=text')
  if tower == 'auto' and have:
    return have[0]
  if tower not in have:
    raise common.WeightsError(
        '--format=hf: Hugging Face export writes a Bert text tower, a ViT or EfficientNet '
        f'(ALIGN) image tower or both as AlignModel; this model\'s image tower is {image!r}, '
        f'its text tower {text!r}')
  return tower


def _part(flat: dict, collection: str, tower: str) -> dict:
  prefix = f'{collection}/{tower}_tower/'
  return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def _resolve(config, fmt: str, tower: str) -> str:
  """The part `fmt` writes ('model', 'image' or 'text'), checked against the config before the
  checkpoint is read."""
  # pylint: disable=import-outside-toplevel
  from vlalign.weights import common, export_effnet
  if fmt == 'openclip':
    return 'model'
  if fmt == 'hf':
    part = _hf_tower(config, tower)
    if part == 'model':
      export_effnet.check_align_model(config.model)
    elif part == 'image' and config.model.image.name == 'efficientnet':
      export_effnet.check_tower(config.model.image, 'hf', 'hf (AlignVisionModel)')
    return part
  if fmt == 'timm':
    if tower == 'text':
      raise common.WeightsError('--format=timm writes image towers only (--tower=image)')
    export_effnet.check_tower(config.model.image, 'same', 'timm')
    return 'image'
  raise common.WeightsError(f'--format must be one of {list(FILES)}, got {fmt!r}')


def _hf(config, flat: dict, part: str) -> tuple[dict, dict]:
  """(state dict, config.json) of --format=hf for `part` (see _resolve)."""
  # pylint: disable=import-outside-toplevel
  from vlalign.weights import export as mapping
  from vlalign.weights import export_effnet
  size = config.data.image_size
  if part == 'model':
    return (export_effnet.align_state(flat, config.model),
            export_effnet.align_config(flat, config.model, size))
  params = _part(flat, 'params', part)
  if part == 'text':
    return mapping.bert_state(params), mapping.bert_config(params, config.model.text)
  if config.model.image.name == 'efficientnet':
    cfg = export_effnet.align_vision_config(config.model.image, size)
    return (export_effnet.align_vision_state(params, _part(flat, 'batch_stats', 'image')),
            {'architectures': ['AlignVisionModel'], **cfg})
  return mapping.vit_state(params, config.model.image), mapping.vit_config(
      params, config.model.image, size)


def _timm(config, flat: dict) -> tuple[dict, dict]:
  """(state dict, config.json) of --format=timm: the EfficientNet image tower as timm's
  tf_efficientnet."""
  from vlalign.weights import export_effnet  # pylint: disable=import-outside-toplevel
  params = _part(flat, 'params', 'image')
  return (export_effnet.timm_state(params, _part(flat, 'batch_stats', 'image'),
                                   config.model.image),
          export_effnet.timm_config(params, config.model.image, config.data))


def export(workdir: str, fmt: str, output: str, config_path: str = '',
           tower: str = 'auto') -> list[str]:
  """Writes the checkpoint and config files of `fmt` into `output`; returns their paths."""
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from safetensors.numpy import save_file
  from vlalign.weights import load
  from vlalign.weights import export as mapping
  config = read_config(workdir, config_path)
  part = _resolve(config, fmt, tower)
  flat = load._workdir_variables(workdir)  # pylint: disable=protected-access
  if fmt == 'openclip':
    state = mapping.openclip_state(flat)
    lib_config = mapping.openclip_config(config.model, config.data.image_size,
                                         config.data.max_len)
  elif fmt == 'hf':
    state, lib_config = _hf(config, flat, part)
  else:
    state, lib_config = _timm(config, flat)
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
