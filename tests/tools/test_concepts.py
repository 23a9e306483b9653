"""tools/concepts ranks ViCHA's concepts with any model vlalign.inference.load reads: here an
OpenCLIP checkpoint (the golden fixture's towers, written by open_clip) imported with
tools/import_weights, its concept words tokenized with CLIP's BPE and its images seen through
the teacher's own view, while the training data comes from another config (demo tiny)."""

import json
import os

import numpy as np
import pytest

from vlalign import config_lib, inference
from vlalign.tools import concepts, import_weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'weights', 'openclip_vit')
CLIP_VOCAB = 49_408


@pytest.fixture(scope='module')
def clip_workdir(tmp_path_factory):
  """The OpenCLIP fixture with its 100-row token table tiled to CLIP's 49,408 BPE ids (so real
  words embed), imported into a vlalign workdir."""
  from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel
  from tests.weights.test_parity import tiny_config  # pylint: disable=import-outside-toplevel
  tmp = tmp_path_factory.mktemp('clip')
  t = load_file(FIXTURE + '.safetensors')
  t['token_embedding.weight'] = np.resize(t['token_embedding.weight'], (CLIP_VOCAB, 32))
  save_file(t, str(tmp / 'clip.safetensors'))
  with open(FIXTURE + '.json') as f:
    hints = json.load(f)
  hints['model_cfg']['text_cfg']['vocab_size'] = CLIP_VOCAB
  (tmp / 'clip.json').write_text(json.dumps(hints))
  workdir = tmp / 'workdir'
  import_weights.import_checkpoint(tiny_config(), 'openclip', str(tmp / 'clip.safetensors'),
                                   str(workdir))
  return workdir


def test_concepts_ranked_by_an_imported_openclip_model(clip_workdir, cache, tmp_path):
  data = config_lib.load_config_module(os.path.join(ROOT, 'configs', 'demo.py')).get_config(
      'tiny')
  data.data.cache_dir = str(cache)
  output = str(tmp_path / 'concepts.jsonl')
  summary = concepts.build(data, str(clip_workdir), output, top=5, min_count=3,
                           max_concepts=40, batch=100, save_embeddings=True)
  teacher = inference.load(str(clip_workdir), batch_size=100)
  assert teacher.config.data.tokenizer.kind == 'bpe' and teacher.image_size == 32
  assert data.data.image_size == 48  # the images were seen at the teacher's size, not this
  saved = np.load(output + '.npz')
  vocab, img, con = list(saved['vocab']), saved['image_emb'], saved['concept_emb']
  assert summary['examples'] == len(img) == 400 and summary['vocab'] == len(vocab) == 40
  assert img.shape[1] == con.shape[1] == 32 and np.isfinite(img).all()
  # The concept words go through CLIP's BPE: <start_of_text> word <end_of_text>.
  tokens = teacher.tokenize(vocab)
  assert (tokens[:, 0] == 49406).all() and (tokens == 49407).sum(axis=1).tolist() == [1] * 40
  assert tokens.max() < CLIP_VOCAB and (tokens[:, 1] >= 256).any()  # merged word pieces
  np.testing.assert_allclose(con, teacher.encode_text(vocab), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(con, axis=1), 1, atol=1e-5)
  with open(output) as f:
    rows = [json.loads(line) for line in f]
  top = np.argsort(-(img @ con.T), axis=1, kind='stable')[:, :5]
  assert [r['id'] for r in rows] == list(saved['ids'])
  assert [r['concepts'] for r in rows] == [[vocab[j] for j in t] for t in top]
  assert len({tuple(r['concepts']) for r in rows}) > 1  # rankings differ between images
