"""Every recipe file parses its options with config_lib.parse_variants and returns a fully locked
config (config_lib.finish): an unknown option or a misspelt tower / tokenizer field stops."""

import glob
import os

import pytest

from vlalign import config_lib
from tests.tools.test_summary import ROOT

RECIPES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if 'def get_config' in open(p).read())


def _module(name: str):
  return config_lib.load_config_module(os.path.join(ROOT, 'configs', f'{name}.py'))


def test_every_recipe_file_is_covered():
  assert {'demo', 'zerovl_vit_b16', 'brivl_effnet_bert', 'declip_vit_b32', 'vicha_vit_b16',
          'align_b7', 'siglip_demo'} <= set(RECIPES)


@pytest.mark.parametrize('name', RECIPES)
def test_unknown_option_names_the_file_and_the_valid_options(name):
  module = _module(name)
  options = module.OPTIONS
  with pytest.raises(config_lib.ConfigError) as e:
    module.get_config(f'{options[-1]},tpyo')
  msg = str(e.value)
  assert f'{name}.py' in msg and "'tpyo'" in msg, msg
  assert all(option in msg for option in options), msg


@pytest.mark.parametrize('name', RECIPES)
def test_every_option_loads(name):
  module = _module(name)
  for option in ('',) + tuple(getattr(module, 'OPTIONS', ())):
    assert module.get_config(option).is_locked


@pytest.mark.parametrize('name', RECIPES)
@pytest.mark.parametrize('tower,typo', [('image', 'patchsize'), ('text', 'num_head')])
def test_a_misspelt_tower_field_is_refused(name, tower, typo):
  config = _module(name).get_config('')
  sub = config.model[tower]
  with pytest.raises(AttributeError, match=typo):  # locked: the recipe's own dict too
    setattr(sub, typo, 16)
  with sub.unlocked():  # a dict that escaped the lock (an edited config.json, a tool)
    sub[typo] = 16
  with pytest.raises(config_lib.ConfigError, match=rf'config\.model\.{tower}\.{typo}: is not a '
                     rf'field of the {sub.name!r} tower'):
    config_lib.validate_model(config)


def test_a_misspelt_tokenizer_field_is_refused():
  config = _module('zerovl_vit_b16').get_config('')
  with pytest.raises(AttributeError, match='vocab'):
    config.data.tokenizer.vocab = 'x.txt'
  text = config_lib.to_json(config).replace('"vocab_file"', '"vocabfile"', 1)
  with pytest.raises(config_lib.ConfigError, match=r'config\.data\.(tokenizer\.)?vocabfile'):
    config_lib.from_json(text)


def test_config_json_towers_come_back_locked_and_checked():
  config = _module('vicha_vit_b16').get_config('tiny')
  back = config_lib.from_json(config_lib.to_json(config))
  assert back.model.image.is_locked and back.model.text.is_locked
  text = config_lib.to_json(config).replace('"patch"', '"patchsize"')
  with pytest.raises(config_lib.ConfigError, match=r'config\.model\.image\.patchsize'):
    config_lib.validate_model(config_lib.from_json(text))
