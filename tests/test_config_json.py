"""config_lib.to_json / from_json: every recipe variant round-trips to an equal locked config."""

import json
import os

import pytest

from vlalign import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [('demo', ''), ('demo', 'tiny'), ('demo', 'conv'), ('demo', 'v48'),
            ('siglip_demo', ''), ('align_b7', ''), ('align_b7', 'runlocal'), ('align_l2', ''),
            ('align_l2', 'runlocal'), ('zerovl_vit_b16', ''), ('zerovl_vit_b16', 'small'),
            ('zerovl_vit_b16', 'tiny'), ('brivl_effnet_bert', ''), ('brivl_effnet_bert', 'tiny'),
            ('declip_vit_b32', ''), ('declip_vit_b32', 'tiny'), ('declip_rn50', ''),
            ('declip_rn50', 'tiny'), ('vicha_vit_b16', ''), ('vicha_vit_b16', 'tiny')]


def _load(name: str, arg: str):
  return config_lib.load_config_module(os.path.join(ROOT, 'configs', f'{name}.py')).get_config(arg)


def _typed(value):
  """A nested structure with each leaf's type next to it (1 and 1.0, () and [] differ)."""
  if isinstance(value, dict):
    return {k: _typed(v) for k, v in value.items()}
  if isinstance(value, (tuple, list)):
    return (type(value).__name__, [_typed(v) for v in value])
  return (type(value).__name__, value)


@pytest.mark.parametrize('name,arg', VARIANTS)
def test_round_trip(name, arg):
  config = _load(name, arg)
  back = config_lib.from_json(config_lib.to_json(config))
  assert _typed(back.to_dict()) == _typed(config.to_dict())
  assert config_lib.to_json(back) == config_lib.to_json(config)
  with pytest.raises(AttributeError):  # locked like base_config(): unknown fields fail
    back.not_a_field = 1


def test_round_trip_with_eval_entries_and_bias():
  config = _load('demo', 'tiny')
  config.evals.datasets = ({'name': 'c10', 'kind': 'zeroshot', 'source': 'tfds:cifar10:test'},)
  config.model.bias_init = -10.0
  config.mesh = {'data': -1, 'fsdp': 2}
  back = config_lib.from_json(config_lib.to_json(config))
  assert back.evals.datasets == config.evals.datasets
  assert back.model.bias_init == -10.0 and dict(back.mesh) == {'data': -1, 'fsdp': 2}


@pytest.mark.parametrize('edit,match', [
    (lambda d: d['data'].update(imgae_size=3), 'config.data.imgae_size: not a config field'),
    (lambda d: d.update(model=3), 'config.model: expected a mapping'),
    (lambda d: d['data'].update(image_size='big'), 'config.data.image_size'),
])
def test_bad_json_names_the_field(edit, match):
  values = json.loads(config_lib.to_json(_load('demo', 'tiny')))
  edit(values)
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.from_json(json.dumps(values))


def test_save_and_load_file(tmp_path):
  config = _load('demo', 'tiny')
  config_lib.save_json(config, str(tmp_path / 'config.json'))
  assert config_lib.load_json(str(tmp_path / 'config.json')).to_dict() == config.to_dict()
  with pytest.raises(config_lib.ConfigError, match='missing.json does not exist'):
    config_lib.load_json(str(tmp_path / 'missing.json'))
