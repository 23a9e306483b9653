"""The tokenizers vlalign reads (config.data.tokenizer) and the one factory every consumer uses:

  make_tokenizer(data_cfg, vocab_file='') -> Tokenizer

`data_cfg` is config.data (data.tokenizer.* and the context length data.max_len); `vocab_file`,
when given, replaces the configured file (train.prepare_data passes the embedded data's
vocabulary when none is configured). A Tokenizer maps strings to int32 [N, max_len] rows
(`tokenize`, usable inside tf.data) and exposes vocab_size, pad_id, unk_id, bos_id, eos_id,
mask_id (None where the vocabulary has none), special_ids and regular_range. Kinds:
'wordpiece' (wordpiece.py), 'bpe' (CLIP, bpe.py), 'sentencepiece' (spm.py).
"""

from vlalign.data.tokenizers.families import (CLIP_MERGES, DEFAULTS, KINDS, ROLES, settings,
                                              vocab_path)

__all__ = ['CLIP_MERGES', 'DEFAULTS', 'KINDS', 'ROLES', 'make_tokenizer', 'model_token_ids', 'settings',
           'vocab_path']


def _classes() -> dict:
  from vlalign.data.tokenizers import bpe, spm, wordpiece  # pylint: disable=g-import-not-at-top
  return {'wordpiece': wordpiece.WordpieceTokenizer, 'bpe': bpe.ClipBpeTokenizer,
          'sentencepiece': spm.SentencePieceTokenizer}


def make_tokenizer(data_cfg, vocab_file: str = ''):
  """The tokenizer config.data.tokenizer describes, framing rows to data.max_len; a ConfigError
  naming the data.tokenizer field when its file or a special token name does not work."""
  from vlalign.config_lib import ConfigError  # pylint: disable=g-import-not-at-top
  from vlalign.data.tokenizers.base import TokenizerError  # pylint: disable=g-import-not-at-top
  kind = data_cfg.tokenizer.kind
  if kind not in KINDS:
    raise ConfigError(f'config.data.tokenizer.kind: {kind!r} is not one of {sorted(KINDS)}')
  path = vocab_file or vocab_path(data_cfg)
  if not path:
    raise ConfigError(f'config.data.tokenizer.vocab_file: is empty; a {kind} tokenizer needs its '
                      f'vocabulary / model file')
  s = settings(data_cfg.tokenizer)
  specials = {role: s[role] for role in ROLES}
  try:
    return _classes()[kind](path, data_cfg.max_len, lower_case=s['lower_case'], specials=specials)
  except TokenizerError as e:
    field = 'data.max_len' if e.field == 'max_len' else f'data.tokenizer.{e.field}'
    raise ConfigError(f'config.{field}: {e}') from e


def model_token_ids(tokenizer) -> dict:
  """The ids the text towers need to tell text from padding (two_tower.build_model's pad_id /
  eos_id): CLIP's BPE pads with id 0, the real token '!', so its rows end at the first
  end-of-text instead; the other kinds pad with an id no text produces."""
  return {'pad_id': tokenizer.pad_id,
          'eos_id': tokenizer.eos_id if tokenizer.kind == 'bpe' else None}
