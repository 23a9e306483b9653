"""Parameter counts and forward FLOPs of a config's model, without allocating parameters.

python -m vlalign.tools.summary --config=configs/align_b7.py [--json] [--vocab_size=N]

Counts are of trainable parameters (batch-norm statistics are reported apart); FLOPs are XLA's
cost analysis of the jitted forward pass of one example per tower (encode_image / encode_text,
projection and normalisation included), lowered on abstract inputs.
"""

import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vlalign.data import tokenizers as tokenizers_lib
from vlalign.models import two_tower

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: the module is also imported as a
  library next to vlalign.main, whose --config flag would collide."""
  config_flags.DEFINE_config_file('config', None, 'Config file (`path.py` or `path.py:arg`).',
                                  lock_config=True)
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
  flags.DEFINE_integer('vocab_size', 0, 'Text vocabulary size (default: config.model.vocab_size, '
                       'else the embedded data\'s configured vocab_size).')


_GROUPS = {'image': ('image_tower', 'image_proj'), 'text': ('text_tower', 'text_proj')}


def _size(tree: Any) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def vocab_size_for(config: ml_collections.ConfigDict, override: int = 0) -> int:
  """The text vocabulary size used for the count: override, model.vocab_size, or the embedded
  data's configured size (its learned vocabulary has at most that many entries)."""
  if override:
    return override
  if config.model.vocab_size:
    return config.model.vocab_size
  if not tokenizers_lib.vocab_path(config.data) and 'embedded' in ''.join(config.data.sources):
    return config.data.embedded.vocab_size
  raise ValueError('set config.model.vocab_size (or --vocab_size) to count the text tower')


def _flops(model, variables, x, method: str) -> float:
  fn = jax.jit(lambda v, a: model.apply(v, a, method=method))
  cost = fn.lower(variables, x).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def summarize(config: ml_collections.ConfigDict, vocab_size: int = 0) -> dict[str, Any]:
  """params_total / params_image / params_text / params_other (trainable), batch_stats, and
  flops_image / flops_text (forward, per example), all from abstract shapes."""
  d = config.data
  model = two_tower.build_model(config.model, vocab_size_for(config, vocab_size), d.max_len)
  image = jax.ShapeDtypeStruct((1, d.image_size, d.image_size, 3), jnp.float32)
  tokens = jax.ShapeDtypeStruct((1, d.max_len), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), image, tokens)
  params = variables['params']
  out = {'params_total': _size(params)}
  grouped = 0
  for group, names in _GROUPS.items():
    out[f'params_{group}'] = sum(_size(params.get(n, {})) for n in names)
    grouped += out[f'params_{group}']
  out['params_other'] = out['params_total'] - grouped
  out['params_by_module'] = {k: _size(v) for k, v in params.items()}
  out['batch_stats'] = _size({k: v for k, v in variables.items() if k != 'params'})
  out['flops_image'] = _flops(model, variables, image, 'encode_image')
  out['flops_text'] = _flops(model, variables, tokens, 'encode_text')
  out.update(image_size=d.image_size, max_len=d.max_len, vocab_size=model.text_tower.vocab_size,
             image_tower=config.model.image.name, text_tower=config.model.text.name)
  return out


def format_table(s: dict[str, Any]) -> str:
  """Human-readable summary."""
  lines = [f'{"module":<14}{"params":>16}']
  lines += [f'{k:<14}{v:>16,}' for k, v in s['params_by_module'].items()]
  lines += [f'{"image":<14}{s["params_image"]:>16,}   {s["flops_image"] / 1e9:8.4g} GFLOPs '
            f'per {s["image_size"]}px image ({s["image_tower"]})',
            f'{"text":<14}{s["params_text"]:>16,}   {s["flops_text"] / 1e9:8.4g} GFLOPs '
            f'per {s["max_len"]} tokens ({s["text_tower"]}, vocab {s["vocab_size"]:,})',
            f'{"other":<14}{s["params_other"]:>16,}',
            f'{"total":<14}{s["params_total"]:>16,}   (trainable; batch-norm statistics '
            f'{s["batch_stats"]:,})']
  return '\n'.join(lines)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.config is None:
    raise app.UsageError('--config is required')
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  from vlalign import config_lib  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.tools.summary'):
    config_lib.validate_model(FLAGS.config)
    summary = summarize(FLAGS.config, FLAGS.vocab_size)
  print(json.dumps(summary) if FLAGS.json else format_table(summary))


if __name__ == '__main__':
  jax.config.update('jax_platforms', 'cpu')  # abstract shapes only: no accelerator needed
  _define_flags()
  app.run(main)
