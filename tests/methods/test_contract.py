"""The method contract (methods/base.py): every recipe in the table fulfils it, plain CLIP is a
method that chooses ZeroVL's mixup and decoupled accumulation in one place, and the data a
method needs (views, concepts) comes from the method."""

import types

import jax
import pytest

from vlalign import config_lib, methods, parallel
from vlalign.methods import base, clip, zerovl
from tests.tools.test_summary import load_config


def test_every_method_fulfils_the_contract():
  assert set(methods.METHODS) == {'clip', 'brivl', 'declip', 'vicha'}
  for name, method in methods.METHODS.items():
    assert isinstance(method, base.Method) and method.name == name
    for field in base.REQUIRED + base.OPTIONAL:
      assert callable(getattr(method, field)), (name, field)
  # Plain CLIP has no heads and no state: the defaults.
  assert methods.METHODS['clip'].init is base.no_state
  assert methods.METHODS['brivl'].init is not base.no_state


def test_a_module_without_an_objective_is_refused():
  module = types.ModuleType('half_method')
  module.validate = lambda config: None
  with pytest.raises(TypeError, match=r"half_method lacks \['make_objective'\]"):
    base.from_module('half', module)


def test_clip_chooses_mixup_and_decoupled_accumulation():
  config = load_config('demo', 'tiny')
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  plain = clip.make_objective(config, None, mesh)
  assert plain.__qualname__.startswith('plain_objective')
  assert clip.make_value_and_grad(config, None, mesh) is None
  config.mixup.enabled = True
  config.grad_accum.micro_batches = 2
  mixed = clip.make_objective(config, None, mesh)
  assert mixed.__module__ == zerovl.__name__
  assert clip.make_value_and_grad(config, None, mesh).__module__ == zerovl.__name__


def test_decoupled_accumulation_refuses_batch_norm_towers_at_validation():
  config = load_config('align_b7', 'runlocal')
  config.grad_accum.micro_batches = 2
  with pytest.raises(config_lib.ConfigError, match=r'config\.grad_accum\.micro_batches: .*'
                     r"batch norm.*'efficientnet'"):
    methods.get_method('clip').validate(config)


def test_data_needs_come_from_the_method():
  declip = load_config('declip_vit_b32', 'tiny')
  assert methods.get_method('declip').data_needs(declip).views == ('image2', 'text_mlm',
                                                                   'text_eda')
  declip.data.views.text_mlm = False
  with pytest.raises(config_lib.ConfigError, match=r'config\.data\.views\.text_mlm: must be True '
                     r'for method.name="declip"'):
    config_lib.validate(declip)
  vicha = load_config('vicha_vit_b16', 'tiny')
  vicha.method.concepts_file = '/x/concepts.jsonl'
  me = vicha.method
  assert methods.get_method('vicha').data_needs(vicha).concepts == (
      '/x/concepts.jsonl', me.concepts_sample, me.concepts_len)
  vicha.method.use_concepts = False
  assert methods.get_method('vicha').data_needs(vicha) == base.DataNeeds()
  assert methods.get_method('clip').data_needs(vicha) == base.DataNeeds()
