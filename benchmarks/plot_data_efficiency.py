"""The data-efficiency plot (matplotlib): final held-out RSUM per recipe, regime and data size
(mean +- std over seeds, one dot per seed), and the learning curves (mean held-out RSUM over
seeds against the training step).

python benchmarks/plot_data_efficiency.py [--results benchmarks/results/data_efficiency.jsonl]
    [--output docs/data_efficiency.png] [--steps 240] [--batch 256]
"""

import argparse
import os
import statistics
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data_efficiency_report as report  # noqa: E402  pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS = [(regime, size) for regime in report.REGIMES for size in report.SIZES]
# Chance RSUM on the 1,200 held-out pairs: 2 directions x (1 + 5 + 10) / 1,200, in percent.
CHANCE_RSUM = 2 * (1 + 5 + 10) / 1200 * 100
COLORS = {('scratch', 'full'): '#2e62aa', ('scratch', 'quarter'): '#8fb3e0',
          ('pretrained', 'full'): '#e68c28', ('pretrained', 'quarter'): '#f5c48e'}


def _bars(ax, records: list[dict]) -> None:
  agg = report.aggregate(records)
  recipes = [r for r in report.RECIPES if any(k[0] == r and not k[1] for k in agg)]
  width = 0.8 / len(CELLS)
  for j, cell in enumerate(CELLS):
    for i, r in enumerate(recipes):
      a = agg.get((r, '') + cell)
      if not a:
        continue
      x = i + (j - (len(CELLS) - 1) / 2) * width
      mean, std, _ = a['rsum']
      ax.bar(x, mean, width, yerr=std, capsize=3, color=COLORS[cell],
             label=f'{cell[0]}, {cell[1]}')
      seeds = [rec['rsum'] for rec in records if report.key(rec)[:4] == (r, '') + cell]
      ax.plot([x] * len(seeds), seeds, 'k.', markersize=4)
  ax.axhline(CHANCE_RSUM, ls=':', color='gray', label='chance')
  ax.set_xticks(range(len(recipes)), recipes)
  ax.set_xlabel('recipe')
  ax.set_ylabel('held-out retrieval RSUM (max 600)')
  ax.set_title('final RSUM: mean +- std over seeds, dots = seeds')
  handles, labels = ax.get_legend_handles_labels()
  seen = {}
  for h, lab in zip(handles, labels):
    seen.setdefault(lab, h)
  ax.legend(seen.values(), seen.keys(), fontsize=8)


def _curves(ax, records: list[dict]) -> None:
  groups = {}
  for rec in records:
    if rec.get('variant'):
      continue
    for step, v in rec.get('curve', {}).get('rsum', []):
      groups.setdefault(report.key(rec)[:4], {}).setdefault(step, []).append(v)
  styles = {'full': '-', 'quarter': '--'}
  colours = {r: f'C{i}' for i, r in enumerate(report.RECIPES)}  # one colour per recipe
  for k, g in sorted(groups.items()):
    steps = sorted(g)
    marker = 'o' if k[2] == 'pretrained' else 's'
    ax.plot(steps, [statistics.fmean(g[s]) for s in steps], styles[k[3]], marker=marker,
            markersize=4, color=colours.get(k[0]), label=f'{k[0]} {k[2]} {k[3]}')
  ax.axhline(CHANCE_RSUM, ls=':', color='gray', label='chance')
  ax.set_xlabel('training step')
  ax.set_ylabel('held-out retrieval RSUM (mean over seeds)')
  ax.set_title('learning curves (colour: recipe; o pretrained, s scratch; -- quarter)')
  if groups:
    ax.legend(fontsize=7)


def plot(records: list[dict], path: str) -> None:
  """Draws both panels into `path` (PNG)."""
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
  _bars(axes[0], records)
  _curves(axes[1], records)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--results', default=os.path.join(ROOT, 'benchmarks', 'results',
                                                        'data_efficiency.jsonl'))
  parser.add_argument('--output', default=os.path.join(ROOT, 'docs', 'data_efficiency.png'))
  parser.add_argument('--steps', type=int, default=240)
  parser.add_argument('--batch', type=int, default=256)
  args = parser.parse_args(argv)
  records = [r for r in report.load(args.results)
             if r['steps'] == args.steps and r['batch'] == args.batch]
  plot(records, args.output)
  print(args.output)


if __name__ == '__main__':
  main()
