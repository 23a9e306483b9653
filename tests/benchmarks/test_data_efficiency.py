"""benchmarks/data_efficiency.py (+ its report and plot modules): the run commands of both regimes
and the ablations, the aggregation over seeds, the table and the plot (the training runs
themselves are the benchmark, not a test)."""

import ast
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from vlalign import config_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import data_efficiency as de  # noqa: E402  pylint: disable=g-import-not-at-top
import data_efficiency_report as report  # noqa: E402  pylint: disable=g-import-not-at-top
import plot_data_efficiency  # noqa: E402  pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _records():
  rng = np.random.default_rng(0)
  out = []
  for recipe, variant in (('clip', ''), ('zerovl', ''), ('zerovl', 'no_mixup')):
    for regime in de.REGIMES:
      for size in ('full', 'quarter'):
        for seed in (0, 1, 2):
          out.append({'recipe': recipe, 'variant': variant, 'regime': regime, 'size': size,
                      'seed': seed, 'steps': 10, 'batch': 8, 'train_pairs': 1, 'wall_s': 60.0,
                      **{m: float(rng.uniform(0.1, 1.0)) * (600 if m == 'rsum' else 1)
                         for m, _, _ in report.METRICS},
                      'curve': {'rsum': [[5, float(seed)], [10, 2.0 * seed]], 'loss': []}})
  return out


def _overrides(cmd: list[str]) -> dict:
  return dict(a[len('--config.'):].split('=', 1) for a in cmd if a.startswith('--config.'))


def test_commands_of_both_regimes_and_an_ablation():
  cmd = de.command('declip', '', 'scratch', 'quarter', 3, 120, 64, '/tmp/w')
  assert '--config=configs/declip_vit_b32.py:small' in cmd
  o = _overrides(cmd)
  assert o['data.embedded.train_sizes.studio'] == '3000'
  assert o['data.embedded.train_sizes.sketch'] == '1500'
  assert (o['seed'], o['total_steps'], o['data.global_batch'], o['eval_every']) == (
      '3', '120', '64', '30')
  assert not any('init_from' in k for k in o)
  pre = _overrides(de.command('clip', '', 'pretrained', 'full', 0, 120, 64, '/w', '/runs/pt'))
  assert pre['model.text.init_from'] == 'vlalign:/runs/pt'
  assert pre['model.image.init_from'] == 'vlalign:/runs/pretrain_image'
  assert pre['data.tokenizer.vocab_file'] == '/runs/pt/vocab.txt'
  assert pre['data.embedded.train_sizes.studio'] == '12000'
  abl = _overrides(de.command('brivl', 'queue1', 'scratch', 'full', 0, 120, 64, '/w'))
  assert abl['method.brivl.queue_size'] == '64'
  assert de.run_name('declip', 'no_iss', 'pretrained', 'quarter', 2) == (
      'declip-no_iss_pretrained_quarter_s2')
  with pytest.raises(ValueError, match='unknown regime'):
    de.regime_overrides('warm', '/p')


def test_plan_runs_recipes_first_ablations_in_their_cells_and_shards_split_it():
  argv = ['--recipes', 'clip,brivl', '--seeds', '0,1', '--ablations']
  runs = de.plan(de.parse_args(argv))
  main = [r for r in runs if not r[1]]
  assert runs[:len(main)] == main and len(main) == 2 * 2 * 2 * 2  # recipes x regimes x sizes x seeds
  ablations = runs[len(main):]
  assert {(r[0], r[2], r[3]) for r in ablations} == {('brivl', 'scratch', 'quarter')}
  assert len(ablations) == len(de.ABLATIONS['brivl']) * 2
  cells = de.plan(de.parse_args(argv + ['--ablation_cells', 'pretrained/full,scratch/full']))
  assert {(r[2], r[3]) for r in cells if r[1]} == {('pretrained', 'full'), ('scratch', 'full')}
  only = de.plan(de.parse_args(argv + ['--variants', 'queue1']))
  assert [r for r in only if r[1]] == [r for r in ablations if r[1] == 'queue1']
  halves = [de.plan(de.parse_args(argv + ['--shard', f'{i}/2'])) for i in (0, 1)]
  assert sorted(halves[0] + halves[1]) == sorted(runs) and not set(halves[0]) & set(halves[1])
  for bad in (['--shard', '2/2'], ['--shard', 'x'], ['--ablation_cells', 'warm/full'],
              ['--recipes', 'clip', '--variants', 'queue1']):
    with pytest.raises(SystemExit):
      de.parse_args(bad)
  vicha = _overrides(de.command('vicha', '', 'scratch', 'full', 0, 8, 16, '/w', '', '/c.jsonl'))
  assert vicha['method.vicha.concepts_file'] == '/c.jsonl'
  clip = _overrides(de.command('clip', '', 'scratch', 'full', 0, 8, 16, '/w', '', '/c.jsonl'))
  assert not any('concepts' in k for k in clip)


def _apply(config, overrides: dict) -> None:
  for field, text in overrides.items():
    *path, leaf = field.split('.')
    node = config
    for p in path:
      node = node[p]
    assert leaf in node, field  # every override names an existing field
    try:
      node[leaf] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      node[leaf] = text


def test_every_ablation_and_the_pretrained_regime_give_a_valid_config(tmp_path):
  pretrain = tmp_path / 'pt'
  (pretrain / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'pretrain_image' / 'checkpoints').mkdir(parents=True)
  (pretrain / 'vocab.txt').write_text('[PAD]\n[UNK]\nred\n')
  for recipe, variants in de.ABLATIONS.items():
    cfg_file, _, arg = de.RECIPES[recipe][0].partition(':')
    module = config_lib.load_config_module(os.path.join(ROOT, cfg_file))
    for variant in [''] + list(variants):
      cmd = de.command(recipe, variant, 'pretrained', 'quarter', 0, 240, 256, '/w', str(pretrain))
      config = module.get_config(arg)
      _apply(config, _overrides(cmd))
      assert config.model.text.init_from == f'vlalign:{pretrain}'
      if recipe in ('clip', 'declip', 'zerovl', 'brivl'):  # vicha needs its concepts file
        config_lib.validate(config)


def test_aggregate_mean_and_sample_std_match_numpy():
  recs = _records()
  agg = report.aggregate(recs)
  for k, stats in agg.items():
    for m, _, _ in report.METRICS:
      vals = np.array([r[m] for r in recs if report.key(r)[:4] == k])
      mean, std, n = stats[m]
      np.testing.assert_allclose(mean, vals.mean(), rtol=1e-12)
      np.testing.assert_allclose(std, vals.std(ddof=1), rtol=1e-12)
      assert n == 3


def test_table_rows_target_ablations_curves_missing_and_plot(tmp_path):
  recs = _records()
  meta = {'command': 'x', 'date': 'd', 'machine': 'm', 'steps': 10, 'batch': 8}
  text = report.table(recs, meta, de.ABLATIONS)
  agg = report.aggregate(recs)
  m, s, _ = agg[('clip', '', 'pretrained', 'quarter')]['rsum']
  assert f'| clip | pretrained | quarter | 3 | {m:.1f} +- {s:.1f} |' in text
  q, b = agg[('zerovl', '', 'scratch', 'quarter')]['rsum'], agg[('clip', '', 'scratch', 'full')][
      'rsum']
  assert f'| zerovl | scratch | {q[0]:.1f} +- {q[1]:.1f} | {b[0]:.1f} +- {b[1]:.1f} | ' \
         f'{q[0] - b[0]:+.1f} |' in text
  delta = agg[('zerovl', 'no_mixup', 'scratch', 'full')]['rsum'][0] - agg[
      ('zerovl', '', 'scratch', 'full')]['rsum'][0]
  assert f'| zerovl | no_mixup (without coin-flip mixup) | scratch | full | 3 |' in text
  assert f'| {delta:+.1f} |' in text
  assert '| clip pretrained full | 1.0 | 2.0 |' in text  # mean of seeds 0, 1, 2 per step
  assert 'declip/scratch/full' in text and 'zerovl-no_debiased/scratch/quarter' in text
  assert 'zerovl-no_debiased/pretrained/quarter' not in text  # ablations: their cells only
  assert 'zerovl-no_debiased/pretrained/quarter' in report.table(
      recs, meta, de.ABLATIONS, (('pretrained', 'quarter'),))
  assert 'zerovl-no_mixup/scratch/full' not in text.split('## Missing cells')[1].split('##')[0]
  assert text.count('| clip_') == 12  # every raw run listed
  path = tmp_path / 'p.png'
  plot_data_efficiency.plot(recs, str(path))
  img = np.asarray(Image.open(path).convert('RGB'))
  for color in ((46, 98, 170), (230, 140, 40)):  # scratch full, pretrained full bars
    assert (np.abs(img.astype(int) - color).sum(-1) < 6).sum() > 100


def test_write_keeps_the_hand_written_head(tmp_path):
  page = tmp_path / 'DE.md'
  page.write_text('# Title\n\nmy analysis\n\n' + report.MARKER + '\nold table\n')
  report.write(str(page), report.MARKER + '\nnew table\n')
  assert page.read_text() == '# Title\n\nmy analysis\n\n' + report.MARKER + '\nnew table\n'


def test_load_keeps_newest_skips_legacy_and_names_bad_line(tmp_path):
  path = tmp_path / 'r.jsonl'
  a, b = _records()[0], dict(_records()[0], rsum=1.0)
  legacy = {k: v for k, v in a.items() if k not in ('regime', 'variant')}
  path.write_text(json.dumps(legacy) + '\n' + json.dumps(a) + '\n' + json.dumps(b) + '\n')
  recs = report.load(str(path))
  assert len(recs) == 1 and recs[0]['rsum'] == 1.0
  path.write_text(json.dumps(a) + '\nnot json\n')
  with pytest.raises(SystemExit, match=r'r.jsonl:2'):
    report.load(str(path))
