"""Tokenizer kinds and their family defaults (no TensorFlow here: config validation reads it)."""

import os

KINDS = ('wordpiece', 'bpe', 'sentencepiece')
# The special tokens a tokenizer exposes, by role: pad (fills rows after the text), unk, bos
# (start: [CLS] / <start_of_text>), eos (end: [SEP] / <end_of_text> / </s>), mask (MLM).
ROLES = ('pad', 'unk', 'bos', 'eos', 'mask')
# Per kind: the token names of each role ('' = the family has none) and lower-casing.
# CLIP pads with id 0, which is the real token '!': its rows end at <end_of_text>, not at the
# first pad id (models must pool / mask by the eos position, not by `tokens != pad_id`).
DEFAULTS = {
    'wordpiece': {'pad': '[PAD]', 'unk': '[UNK]', 'bos': '[CLS]', 'eos': '[SEP]',
                  'mask': '[MASK]', 'lower_case': True},
    'bpe': {'pad': '!', 'unk': '', 'bos': '<start_of_text>', 'eos': '<end_of_text>', 'mask': '',
            'lower_case': True},
    'sentencepiece': {'pad': '<pad>', 'unk': '<unk>', 'bos': '', 'eos': '</s>', 'mask': '',
                      'lower_case': False},
}
# CLIP's byte-level BPE merges (a copy of the file OpenAI CLIP and open_clip ship; MIT licence):
# the default vocab_file of kind 'bpe'.
CLIP_MERGES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'assets',
                           'bpe_simple_vocab_16e6.txt.gz')


def settings(tok_cfg) -> dict:
  """config.data.tokenizer with the family defaults filled in: pad/unk/bos/eos/mask names
  ('' where the family has none) and lower_case."""
  out = dict(DEFAULTS[tok_cfg.kind])
  for role in ROLES:
    if tok_cfg[role]:
      out[role] = tok_cfg[role]
  if tok_cfg.lower_case is not None:
    out['lower_case'] = bool(tok_cfg.lower_case)
  return out


def vocab_path(data_cfg) -> str:
  """The configured vocabulary / merges / model file: data.tokenizer.vocab_file, else the
  legacy data.vocab_file, else CLIP's merges for 'bpe'; '' means the embedded data's vocab."""
  t = data_cfg.tokenizer
  path = t.vocab_file or data_cfg.get('vocab_file', '')
  if not path and t.kind == 'bpe':
    return CLIP_MERGES
  return path
