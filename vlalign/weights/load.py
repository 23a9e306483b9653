"""Pretrained weights for a configured model: `model.image.init_from`, `model.text.init_from`
('<format>:<path>', one tower; format 'vlalign' takes that tower from a vlalign workdir's newest
checkpoint) and `model.init_from` (a vlalign workdir or '<format>:<path>' of
a whole two-tower checkpoint). Everything here runs on the host with NumPy arrays."""

import logging
import os
import re
from typing import Any, Mapping

import numpy as np

from vlalign.weights import common, hf_align, hf_bert, openclip, timm_effnet, timm_vit

FORMATS = ('openclip', 'hf', 'timm', 'vlalign')
# Parameters a checkpoint may carry that a configured tower may lack (dropped when absent).
OPTIONAL = ('pooler/', 'top_conv/', 'top_bn/', 'classifier/')
# Reference-library config files looked for next to a checkpoint (heads, QuickGELU, ...).
HINT_FILES = ('open_clip_config.json', 'config.json')


def parse_spec(spec: str, field: str) -> tuple[str, str]:
  """('openclip' | 'hf' | 'timm', path) from '<format>:<path>'."""
  fmt, sep, path = spec.partition(':')
  if not sep or fmt not in FORMATS or not path:
    raise common.WeightsError(f'config.{field}={spec!r}: expected "<format>:<path>" with format '
                              f'one of {FORMATS} (e.g. "openclip:/ckpt/open_clip_model.safetensors")')
  return fmt, path


def hints_for(path: str) -> dict:
  """The reference library's config next to the checkpoint (or {} when there is none)."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  stem = os.path.splitext(path)[0] + '.json'
  for name in (stem,) + tuple(os.path.join(folder, n) for n in HINT_FILES):
    if os.path.isfile(name):
      return common.read_json(name)
  return {}


def _heads(target: Mapping[str, tuple]) -> int:
  """The configured ViT's number of heads, read from its query kernel [d, heads, head_dim]."""
  return target['encoder/block0/attn/query/kernel'][1]


def tower_tensors(fmt: str, path: str, tower: str, target: Mapping[str, tuple]) -> dict:
  """One tower's parameters (names relative to the tower) from a reference checkpoint."""
  t = common.read_safetensors(path)
  if tower == 'image':
    if fmt == 'openclip':
      return openclip.image_params(t)
    if fmt == 'timm' and 'conv_stem.weight' in t:
      return timm_effnet.image_params(t)
    if fmt == 'hf' and hf_align.is_align(t):
      return hf_align.image_params(t)
    return timm_vit.image_params(timm_vit.from_hf(t) if fmt == 'hf' else t, _heads(target))
  if fmt == 'openclip':
    return openclip.text_params(t)
  if fmt == 'hf':
    return hf_bert.text_params(t)
  raise common.WeightsError('format "timm" holds image towers only')


def fit(loaded: dict[str, np.ndarray], target: Mapping[str, tuple], source: str) -> list[str]:
  """Adapts `loaded` in place to `target` (position tables resized to the configured grid,
  optional heads the model lacks dropped); raises WeightsError listing every parameter that
  does not fit; returns the target parameters left as initialised."""
  for k in list(loaded):
    if k not in target and any(f'/{o}' in f'/{k}' for o in OPTIONAL):
      logging.info('%s: %s is not used by the configured model', source, k)
      del loaded[k]
  for k, v in loaded.items():
    if (k.split('/')[-1] == 'pos_embed' and k in target and tuple(v.shape) != target[k]
        and v.shape[-1] == target[k][-1] and 'image_tower' in k):
      loaded[k] = common.resize_pos_embed(v, target[k][-2])
  return common.check_fit(loaded, target, source)


def first_layers(params: dict[str, np.ndarray], target: Mapping[str, tuple],
                 source: str) -> dict[str, np.ndarray]:
  """`params` without the numbered layers ('layer<i>/', 'encoder/block<i>/') the configured tower
  lacks: a shallower tower takes the checkpoint's first layers (ALBEF / ViCHA: the first 6 of
  BERT-Base's 12)."""
  layer = lambda k: re.search(r'(?:^|/)((?:layer|block)\d+)/', k)
  deep = {k for k in params if k not in target and layer(k)}
  if deep:
    names = sorted({layer(k).group(1) for k in deep}, key=lambda n: int(re.sub(r'\D', '', n)))
    logging.info('%s: the configured tower takes the first layers; %d checkpoint layer(s) not '
                 'used: %s', source, len(names), ', '.join(names))
  return {k: v for k, v in params.items() if k not in deep}


def _workdir_variables(workdir: str) -> dict[str, np.ndarray]:
  """'params/...' and model-state arrays of the newest checkpoint in a vlalign workdir."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  root = os.path.join(os.path.abspath(workdir), 'checkpoints')
  steps = sorted(int(s) for s in os.listdir(root) if s.isdigit()) if os.path.isdir(root) else []
  if not steps:
    raise common.WeightsError(f'{workdir}: no checkpoint in {root}')
  state = ocp.StandardCheckpointer().restore(os.path.join(root, str(steps[-1]), 'state'))
  out = {'params': state['params'], **(state.get('model_state') or {})}
  return {k: np.asarray(v) for k, v in _flatten(out).items()}


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f'{prefix}{k}/'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _model_source(spec: str) -> dict[str, np.ndarray]:
  """A whole model's variables ('params/...', 'batch_stats/...') from a workdir or
  '<format>:<path>' (openclip, or hf for an AlignModel)."""
  if os.path.isdir(spec):
    return _workdir_variables(spec)
  fmt, path = parse_spec(spec, 'model.init_from')
  t = common.read_safetensors(path)
  if fmt == 'openclip':
    return openclip.model_params(t)
  if fmt == 'hf' and hf_align.is_align(t) and 'temperature' in t:
    return hf_align.model_params(t)
  raise common.WeightsError(f'config.model.init_from={spec!r}: a whole two-tower model is '
                            'read from a vlalign workdir, an OpenCLIP or a Hugging Face ALIGN '
                            'checkpoint')


def workdir_tower(workdir: str, tower: str) -> dict[str, np.ndarray]:
  """One tower's variables ('params/<tower>_tower/...' and its batch-norm statistics) from the
  newest checkpoint of a vlalign workdir (the projection and everything else stay behind)."""
  if not os.path.isdir(workdir):
    raise common.WeightsError(f'config.model.{tower}.init_from=vlalign:{workdir}: not a directory '
                              '(a vlalign workdir is expected)')
  part = f'/{tower}_tower/'
  out = {k: v for k, v in _workdir_variables(workdir).items() if part in f'/{k}'}
  if not any(k.startswith('params/') for k in out):
    raise common.WeightsError(f'config.model.{tower}.init_from=vlalign:{workdir}: its checkpoint '
                              f'holds no {tower}_tower parameters')
  return out


def initial_variables(model_cfg, abstract_variables: Any) -> dict[str, np.ndarray]:
  """Flat {'params/image_tower/...': array, 'batch_stats/...': array} of every configured
  init_from (model.init_from first, then the towers'), checked against the model's shapes."""
  target = common.flat_shapes(abstract_variables)
  loaded = {}
  if model_cfg.get('init_from'):
    loaded.update(_model_source(model_cfg.init_from))
  for tower in ('image', 'text'):
    spec = model_cfg[tower].get('init_from')
    if spec:
      fmt, path = parse_spec(spec, f'model.{tower}.init_from')
      if fmt == 'vlalign':
        loaded.update(workdir_tower(path, tower))
        continue
      name = f'params/{tower}_tower'
      sub = {k[len(name) + 1:]: s for k, s in target.items() if k.startswith(name + '/')}
      params = tower_tensors(fmt, path, tower, sub)
      if model_cfg[tower].get('init_first_layers', False):
        params = first_layers(params, sub, f'model.{tower}.init_from')
      loaded.update({common.place(k, tower): v for k, v in params.items()})
  if not loaded:
    return {}
  fresh = fit(loaded, target, 'init_from')
  if fresh:
    logging.info('init_from leaves %d parameter(s) as initialised: %s', len(fresh),
                 ', '.join(fresh))
  return loaded
