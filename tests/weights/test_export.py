"""Export: import -> export gives back the reference library's own state dict bit for bit (so
open_clip / transformers load it and produce the golden outputs), and the exported config
imports to the same vlalign towers."""

import os

import numpy as np

from tests.weights.test_parity import fixture, tiny_config
from vlalign.tools import export, import_weights
from vlalign.weights import common, convert, load


def _roundtrip(tmp_path, name: str, fmt: str) -> tuple[dict, dict, list[str]]:
  path, _ = fixture(name)
  config = import_weights.import_checkpoint(tiny_config(), fmt, path, str(tmp_path / 'w'))
  written = export.export(str(tmp_path / 'w'), fmt, str(tmp_path / 'out'))
  return common.read_safetensors(path), common.read_safetensors(written[0]), [config, written]


def test_openclip_import_export_is_exact_and_reimports(tmp_path):
  want, got, (config, written) = _roundtrip(tmp_path, 'openclip_vit', 'openclip')
  assert got.keys() == want.keys()
  for k, v in want.items():
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  again = tiny_config()
  convert.configure(again, 'openclip', written[0], load.hints_for(written[0]))
  for tower in ('image', 'text'):
    assert again.model[tower].to_dict() == config.model[tower].to_dict()
  assert os.path.basename(written[1]) == 'open_clip_config.json'


def test_hf_bert_import_export_is_exact(tmp_path):
  want, got, (config, written) = _roundtrip(tmp_path, 'hf_bert', 'hf')
  want = common.strip_prefix(want, ('bert.',))
  assert got.keys() == want.keys()
  for k, v in want.items():
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  again = tiny_config()
  convert.configure(again, 'hf', written[0], load.hints_for(written[0]))
  assert again.model.text.to_dict() == {**config.model.text.to_dict(),
                                        'init_from': f'hf:{written[0]}'}
