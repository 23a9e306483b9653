"""data.tokenizer: ids equal to the reference libraries (Hugging Face's BertTokenizer, open_clip's
tokenizer, sentencepiece) on 60 captions, read from the committed golden fixtures that
tests/fixtures/make_tokenizer_fixtures.py wrote; config errors; training through the pipeline."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vlalign import config_lib
from vlalign.data import tokenizers, views

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'fixtures')
UNCASED = os.path.join(FIXTURES, 'tokenizer_bert_uncased_vocab.txt')
CASED = os.path.join(FIXTURES, 'tokenizer_bert_cased_vocab.txt')
SPM = os.path.join(FIXTURES, 'tokenizer_spm.model')
with open(UNCASED, encoding='utf-8') as _f:
  UNCASED_SIZE = len(_f.read().splitlines())
# fixture key -> (kind, vocab_file, max_len, data.tokenizer overrides)
CASES = {'bert_uncased': ('wordpiece', UNCASED, 64, {}),
         'bert_cased': ('wordpiece', CASED, 64, {'lower_case': False}),
         'clip_77': ('bpe', '', 77, {}), 'clip_16': ('bpe', '', 16, {}),
         'clip_cased_77': ('bpe', '', 77, {'lower_case': False}),
         'spm': ('sentencepiece', SPM, 48, {}),
         'spm_lower': ('sentencepiece', SPM, 48, {'lower_case': True})}


def _data_cfg(kind, vocab_file='', max_len=32, **overrides):
  config = config_lib.base_config()
  config.data.max_len = max_len
  config.data.tokenizer.update(kind=kind, vocab_file=vocab_file, **overrides)
  return config


@pytest.fixture(scope='module')
def captions():
  with open(os.path.join(FIXTURES, 'tokenizer_captions.json'), encoding='utf-8') as f:
    caps = json.load(f)
  assert len(caps) >= 50 and '' in caps and any(len(c) > 500 for c in caps)
  return caps


@pytest.fixture(scope='module')
def expected():
  with np.load(os.path.join(FIXTURES, 'tokenizer_expected.npz'), allow_pickle=False) as f:
    return dict(f)


@pytest.fixture(scope='module')
def clip():
  return tokenizers.make_tokenizer(_data_cfg('bpe', max_len=77).data)


@pytest.mark.parametrize('name', sorted(CASES))
def test_ids_equal_the_reference_library(name, captions, expected):
  kind, path, max_len, overrides = CASES[name]
  config = _data_cfg(kind, path, max_len, **overrides)
  config_lib.validate(config)
  tok = tokenizers.make_tokenizer(config.data)
  got = tok.tokenize(np.array(captions, dtype=object)).numpy()
  want = expected[name]
  bad = [(i, captions[i][:40]) for i in range(len(captions)) if not (got[i] == want[i]).all()]
  assert not bad, bad
  assert got.dtype == np.int32 and got.shape == want.shape


def test_special_ids_are_read_by_name(clip):
  bert = tokenizers.make_tokenizer(_data_cfg('wordpiece', UNCASED).data)
  assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == (
      0, 100, 101, 102, 103)
  assert bert.regular_range == (104, UNCASED_SIZE) == (104, bert.vocab_size)
  assert (clip.vocab_size, clip.bos_id, clip.eos_id, clip.pad_id) == (49408, 49406, 49407, 0)
  assert clip.mask_id is None and clip.unk_id is None and clip.regular_range == (0, 49406)
  sp = tokenizers.make_tokenizer(_data_cfg('sentencepiece', SPM).data)
  assert (sp.unk_id, sp.bos_id, sp.eos_id, sp.pad_id, sp.vocab_size) == (0, None, 2, 3, 400)
  renamed = tokenizers.make_tokenizer(_data_cfg('sentencepiece', SPM, bos='<s>', pad='</s>').data)
  assert (renamed.bos_id, renamed.pad_id) == (1, 2)  # SigLIP pads with </s>
  assert renamed.tokenize('')[:3].numpy().tolist() == [1, 2, 2]


def test_bpe_inside_tf_data_equals_eager(clip, captions, expected):
  """Batched in the graph (tf.numpy_function over a batch of strings), per example, eager."""
  ds = tf.data.Dataset.from_tensor_slices(np.array(captions, dtype=object))
  batched = np.concatenate(list(ds.batch(7).map(clip.tokenize).as_numpy_iterator()))
  single = np.stack(list(ds.map(clip.tokenize).as_numpy_iterator()))
  np.testing.assert_array_equal(batched, expected['clip_77'])
  np.testing.assert_array_equal(single, expected['clip_77'])
  assert clip.tokenize('x != y').numpy()[:6].tolist() == [49406, 343, 0, 284, 344, 49407]


def test_detokenize_round_trip(clip):
  texts = ['a red circle on a grey background', 'two small blue squares']
  assert clip.detokenize(clip.tokenize(texts).numpy()) == texts
  sp = tokenizers.make_tokenizer(_data_cfg('sentencepiece', SPM).data)
  assert sp.detokenize(sp.tokenize(texts).numpy()) == texts


def test_mlm_never_selects_clip_padding(clip):
  """With CLIP's BPE the padding id 0 is the token '!': masking selects by position (before
  <end_of_text>) and draws replacements below the specials."""
  tokens = clip.tokenize(['x != y', 'a red circle']).numpy()
  key = tf.constant([0, 1], tf.int64)
  for row in tokens:
    masked, labels = views.mlm_mask(tf.constant(row), key, prob=1.0, vocab_size=clip.vocab_size,
                                    mask_id=7, regular=clip.regular_range, eos_id=clip.eos_id)
    n = int(np.argmax(row == clip.eos_id))
    selected = labels.numpy() >= 0
    assert selected[1:n].all() and not selected[:1].any() and not selected[n:].any()
    assert (masked.numpy()[n:] == row[n:]).all()
  aug = views.zerovl_text_augment(tf.constant(tokens), key, prob=0.99, vocab_size=clip.vocab_size,
                                  mask_id=7, pad_id=clip.pad_id, regular=clip.regular_range,
                                  eos_id=clip.eos_id).numpy()
  assert (aug[:, 0] == clip.bos_id).all() and ((aug == clip.eos_id).sum(axis=1) == 1).all()
  assert ((aug < clip.bos_id) | (aug == clip.bos_id) | (aug == clip.eos_id)).all()


@pytest.mark.parametrize('overrides,field', [
    ({'kind': 'unigram'}, 'data.tokenizer.kind'),
    ({'kind': 'sentencepiece', 'vocab_file': '/nonexistent/m.model'}, 'data.tokenizer.vocab_file'),
    ({'kind': 'sentencepiece'}, 'data.tokenizer.vocab_file'),
    ({'kind': 'wordpiece', 'vocab_file': UNCASED, 'mask': '[MSK]'}, 'data.tokenizer.mask'),
    ({'kind': 'bpe', 'eos': '<|endoftext|>'}, 'data.tokenizer.eos'),
    ({'kind': 'sentencepiece', 'vocab_file': UNCASED}, 'data.tokenizer.vocab_file'),
    ({'kind': 'bpe', 'vocab_file': SPM}, 'data.tokenizer.vocab_file'),
])
def test_bad_tokenizer_config_is_one_config_error(overrides, field):
  """Caught by validate (kind, missing file) or by the factory (a name not in the file, a file
  of another kind); either way one ConfigError naming the field."""
  config = _data_cfg(**{'kind': 'wordpiece', **overrides})
  with pytest.raises(config_lib.ConfigError, match=f'^config.{field}: '):
    config_lib.validate(config)
    tokenizers.make_tokenizer(config.data)


def test_config_needs_a_mask_token_for_mlm_and_one_vocab_field():
  config = _data_cfg('bpe')
  config.data.views.text_mlm = True
  with pytest.raises(config_lib.ConfigError, match='^config.data.tokenizer.mask: '):
    config_lib.validate(config)
  config = _data_cfg('wordpiece', UNCASED)
  config.data.vocab_file = CASED
  with pytest.raises(config_lib.ConfigError, match='^config.data.vocab_file: '):
    config_lib.validate(config)
  config = _data_cfg('wordpiece')
  config.data.vocab_file = '/nonexistent/vocab.txt'
  with pytest.raises(config_lib.ConfigError, match='^config.data.vocab_file: .* does not exist'):
    config_lib.validate(config)
  config.data.vocab_file = UNCASED  # the legacy field alone still works
  assert tokenizers.make_tokenizer(config.data).vocab_size == UNCASED_SIZE


def test_trains_two_steps_with_clip_bpe(small_dataset, tmp_path):
  """The tiny demo trains 2 steps with CLIP's BPE through the whole input pipeline; the batches
  hold CLIP rows (<start_of_text> first, one <end_of_text>)."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  from vlalign import train  # pylint: disable=g-import-not-at-top
  from vlalign.data import pipeline  # pylint: disable=g-import-not-at-top
  config = demo.get_config('tiny')
  config.data.tokenizer.kind = 'bpe'
  config.data.max_len = 16
  config.total_steps, config.log_every, config.evals.heldout = 2, 1, False
  config.model.image.update(stem='patch', patch=16)  # the cheapest tiny tower to compile
  config.data.sources = (f'tfrecord:{small_dataset["train"]["studio"]}',)
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'metrics.jsonl', encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2]
  assert all(np.isfinite(r['train/loss']) for r in rows if 'train/loss' in r)
  paths = train.prepare_data(config)
  tok = tokenizers.make_tokenizer(config.data, paths['vocab'])
  batch = next(iter(pipeline.TrainIterator(config.data, paths['sources'], tok, seed=0)))
  assert batch['tokens'].shape == (16, 16) and (batch['tokens'][:, 0] == 49406).all()
  assert ((batch['tokens'] == 49407).sum(axis=1) == 1).all()


def test_ascii_fast_path_cleans_like_ftfy():
  """bpe.clean skips ftfy and HTML unescaping for printable ASCII without '&': same result."""
  import html  # pylint: disable=g-import-not-at-top
  import ftfy  # pylint: disable=g-import-not-at-top
  from vlalign.data.tokenizers import bpe  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  chars = np.array([chr(c) for c in range(0x20, 0x7f)])
  for _ in range(2000):
    text = ''.join(rng.choice(chars, rng.integers(0, 40)))
    full = ' '.join(html.unescape(html.unescape(ftfy.fix_text(text))).split())
    assert bpe.clean(text, True) == full.lower() and bpe.clean(text, False) == full
