"""Export: import -> export gives back the reference library's own state dict bit for bit (so
open_clip / transformers load it and produce the golden outputs), and the exported config
imports to the same vlalign towers."""

import os

import numpy as np

from tests.weights.test_parity import fixture, tiny_config
from vlalign.tools import export
from vlalign.weights import common, convert, load


def _roundtrip(imported, tmp_path, name: str, fmt: str) -> tuple[dict, dict, list]:
  config, workdir = imported(name, fmt)
  written = export.export(str(workdir), fmt, str(tmp_path / 'out'))
  return (common.read_safetensors(fixture(name)[0]), common.read_safetensors(written[0]),
          [config, written])


def test_openclip_import_export_is_exact_and_reimports(imported, tmp_path):
  want, got, (config, written) = _roundtrip(imported, tmp_path, 'openclip_vit', 'openclip')
  assert got.keys() == want.keys()
  for k, v in want.items():
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  again = tiny_config()
  convert.configure(again, 'openclip', written[0], load.hints_for(written[0]))
  for tower in ('image', 'text'):
    assert again.model[tower].to_dict() == config.model[tower].to_dict()
  assert os.path.basename(written[1]) == 'open_clip_config.json'


def test_hf_bert_import_export_is_exact(imported, tmp_path):
  want, got, (config, written) = _roundtrip(imported, tmp_path, 'hf_bert', 'hf')
  want = common.strip_prefix(want, ('bert.',))
  assert got.keys() == want.keys()
  for k, v in want.items():
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  again = tiny_config()
  convert.configure(again, 'hf', written[0], load.hints_for(written[0]))
  assert again.model.text.to_dict() == {**config.model.text.to_dict(),
                                        'init_from': f'hf:{written[0]}'}
