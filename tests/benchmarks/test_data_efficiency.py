"""benchmarks/data_efficiency.py: the run commands, the aggregation over seeds, the table and the
plot (the training runs themselves are the benchmark, not a test)."""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import data_efficiency as de  # noqa: E402  pylint: disable=g-import-not-at-top


def _records():
  rng = np.random.default_rng(0)
  out = []
  for recipe in ('clip', 'zerovl'):
    for size in ('full', 'quarter'):
      for seed in (0, 1, 2):
        out.append({'recipe': recipe, 'size': size, 'seed': seed, 'steps': 10, 'batch': 8,
                    'train_pairs': 1, 'wall_s': 60.0,
                    **{m: float(rng.uniform(0.1, 1.0)) * (600 if m == 'rsum' else 1)
                       for m, _, _ in de.METRICS}})
  return out


def test_quarter_command_overrides_sizes_seed_and_budget():
  cmd = de.command('declip', 'quarter', 3, 120, 64, '/tmp/w')
  assert '--config=configs/declip_vit_b32.py:small' in cmd
  assert '--config.data.embedded.train_sizes.studio=3000' in cmd
  assert '--config.data.embedded.train_sizes.sketch=1500' in cmd
  assert '--config.seed=3' in cmd and '--config.total_steps=120' in cmd
  assert '--config.data.global_batch=64' in cmd
  full = de.command('clip', 'full', 0, 120, 64, '/tmp/w')
  assert '--config.data.embedded.train_sizes.studio=12000' in full
  assert '--config=configs/demo.py:v48' in full  # the towers its recorded rows used


def test_aggregate_mean_and_sample_std_match_numpy():
  recs = _records()
  agg = de.aggregate(recs)
  for (recipe, size), stats in agg.items():
    for m, _, _ in de.METRICS:
      vals = np.array([r[m] for r in recs if r['recipe'] == recipe and r['size'] == size])
      mean, std, n = stats[m]
      np.testing.assert_allclose(mean, vals.mean(), rtol=1e-12)
      np.testing.assert_allclose(std, vals.std(ddof=1), rtol=1e-12)
      assert n == 3


def test_table_rows_ratios_and_plot(tmp_path):
  recs = _records()
  meta = {'command': 'x', 'date': 'd', 'machine': 'm', 'steps': 10, 'batch': 8}
  text = de.table(recs, meta)
  agg = de.aggregate(recs)
  f, q = agg[('zerovl', 'full')]['shape_top1'][0], agg[('zerovl', 'quarter')]['shape_top1'][0]
  ratio_row = [l for l in text.splitlines() if l.startswith('| zerovl |') and
               l.split('|')[2].strip() not in de.SIZES]
  assert len(ratio_row) == 1 and f'{q / f:.2f}' in ratio_row[0].split('|')[4]
  m, s, _ = agg[('clip', 'quarter')]['rsum']
  assert f'| clip | quarter | 3 | {m:.1f} +- {s:.1f} |' in text
  assert text.count('| clip_') == 6  # every raw run listed
  assert 'not run yet: declip/full, declip/quarter, brivl/full' in text
  assert 'fewer seeds' not in text
  assert 'fewer seeds than [0, 1, 2]: clip/full' in de.table(recs[1:], meta)
  path = tmp_path / 'p.png'
  de.plot(recs, str(path))
  img = np.asarray(Image.open(path).convert('RGB'))
  # both bar colours are drawn (full: blue, quarter: orange)
  assert ((img == (46, 98, 170)).all(-1)).sum() > 100
  assert ((img == (230, 140, 40)).all(-1)).sum() > 100


def test_load_keeps_newest_and_names_bad_line(tmp_path):
  path = tmp_path / 'r.jsonl'
  a, b = _records()[0], dict(_records()[0], rsum=1.0)
  path.write_text(json.dumps(a) + '\n' + json.dumps(b) + '\n')
  recs = de.load(str(path))
  assert len(recs) == 1 and recs[0]['rsum'] == 1.0
  copy = dict(a, rsum=2.0, wall_s=None)  # a read-back copy does not replace the trained run
  path.write_text(json.dumps(a) + '\n' + json.dumps(copy) + '\n')
  assert de.load(str(path))[0]['wall_s'] == 60.0
  path.write_text(json.dumps(a) + '\nnot json\n')
  with pytest.raises(SystemExit, match=r'r.jsonl:2'):
    de.load(str(path))
