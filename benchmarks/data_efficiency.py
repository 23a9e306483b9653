"""The data-efficiency table: the baseline and each recipe trained on all of the embedded data and
on a quarter of it, for the same budget (steps x global batch), several seeds each.

python benchmarks/data_efficiency.py [--recipes clip,zerovl,declip,brivl,vicha] [--seeds 0,1]
    [--steps 300] [--batch 256] [--runs_dir /tmp/data_efficiency]
    [--results benchmarks/results/data_efficiency.jsonl] [--table docs/DATA_EFFICIENCY.md]
    [--plot docs/data_efficiency.png]

Every run is `python -m vlalign.main --config=<recipe's small config> --workdir=<runs_dir>/<run>`
with the budget, the seed and (for `quarter`) the training sizes overridden on the command line:
the quarter is the first quarter of each source (the embedded generator draws examples in order
from one stream per source, so it is a prefix of the full data; the held-out split is the same).
Its vocabulary is learned from the quarter's captions, as it would be for a smaller corpus.
`config.seed` changes initialisation, dropout, augmentation and data order, not the data.

Runs are sequential (a run uses every core) and resumable: a run whose workdir already holds
eval/heldout.json is read back, not retrained, and each finished run is appended to --results.
The table (mean +- sample standard deviation over seeds, and the quarter / full ratio) and a bar
plot (PIL, no plotting library needed) are rewritten from all results at the end.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# recipe -> (config argument for vlalign.main, one-line description for the table)
RECIPES = {
    'clip': ('configs/demo.py:v48', 'ALIGN/CLIP softmax contrastive (the demo, 48-px towers)'),
    'zerovl': ('configs/zerovl_vit_b16.py:small',
               'ZeroVL: debiased sampling, coin-flip mixup, text aug, 2 decoupled micro-batches'),
    'declip': ('configs/declip_vit_b32.py:small', 'DeCLIP: MVS + SimSiam + MLM + NNS'),
    'brivl': ('configs/brivl_effnet_bert.py:small', 'BriVL: momentum encoders + queues'),
    'vicha': ('configs/vicha_vit_b16.py:small',
              'ViCHA: hierarchical alignment + MAE + concepts + momentum distillation'),
}
# The embedded data's training sizes of the small configs (config_lib's defaults).
FULL_SIZES = {'studio': 12000, 'sketch': 6000}
SIZES = {'full': 1, 'quarter': 4}
METRICS = (('rsum', 'eval/retrieval/rsum', 'RSUM'),
           ('color_top1', 'eval/zeroshot/color_top1', 'colour'),
           ('shape_top1', 'eval/zeroshot/shape_top1', 'shape'),
           ('size_top1', 'eval/zeroshot/size_top1', 'size'))


def run_name(recipe: str, size: str, seed: int) -> str:
  return f'{recipe}_{size}_s{seed}'


def command(recipe: str, size: str, seed: int, steps: int, batch: int, workdir: str) -> list[str]:
  """The vlalign.main command line of one run."""
  cfg = RECIPES[recipe][0]
  cmd = [sys.executable, '-m', 'vlalign.main', f'--config={cfg}', f'--workdir={workdir}',
         f'--config.seed={seed}', f'--config.total_steps={steps}',
         f'--config.data.global_batch={batch}',
         f'--config.optimizer.warmup_steps={max(1, steps // 12)}',
         f'--config.checkpoint_every={steps}', f'--config.log_every={max(1, steps // 6)}']
  for source, n in FULL_SIZES.items():
    cmd.append(f'--config.data.embedded.train_sizes.{source}={n // SIZES[size]}')
  return cmd


def train(recipe, size, seed, args) -> dict:
  """Trains one run (or reads back a finished one) and returns its result record."""
  name = run_name(recipe, size, seed)
  workdir = os.path.join(args.runs_dir, name)
  path = os.path.join(workdir, 'eval', 'heldout.json')
  wall = None
  if not os.path.exists(path):
    cmd = command(recipe, size, seed, args.steps, args.batch, workdir)
    print(f'[{name}] {" ".join(cmd[1:])}', flush=True)
    t0 = time.time()
    with open(os.path.join(args.runs_dir, f'{name}.log'), 'w') as log:
      proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.time() - t0
    if proc.returncode != 0 or not os.path.exists(path):
      raise SystemExit(f'[{name}] failed (exit {proc.returncode}); see '
                       f'{os.path.join(args.runs_dir, name + ".log")}')
  with open(path) as f:
    ev = json.load(f)
  if ev['step'] != args.steps:
    raise SystemExit(f'{path}: evaluated at step {ev["step"]}, expected {args.steps} (a run '
                     'with another budget is in this workdir; use another --runs_dir)')
  rec = {'recipe': recipe, 'size': size, 'seed': seed, 'steps': args.steps, 'batch': args.batch,
         'train_pairs': sum(FULL_SIZES.values()) // SIZES[size], 'wall_s': wall,
         **{key: ev[src] for key, src, _ in METRICS}}
  print(f'[{name}] ' + ' '.join(f'{k}={rec[k]:.3f}' for k, _, _ in METRICS)
        + (f' ({wall / 60:.1f} min)' if wall else ' (read back)'), flush=True)
  return rec


def aggregate(records: list[dict]) -> dict:
  """(recipe, size) -> {metric: (mean, sample std or 0 for one seed, n)} over seeds."""
  groups = {}
  for r in records:
    groups.setdefault((r['recipe'], r['size']), []).append(r)
  out = {}
  for key, rs in groups.items():
    out[key] = {}
    for m, _, _ in METRICS:
      vals = [r[m] for r in rs]
      out[key][m] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0,
                     len(vals))
  return out


def table(records: list[dict], meta: dict) -> str:
  """The Markdown page: one row per recipe and size, the quarter / full ratios, the raw runs."""
  agg = aggregate(records)
  recipes = [r for r in RECIPES if any(k[0] == r for k in agg)]
  lines = ['# Data efficiency on the embedded data (issue 7)', '',
           f'Generated by `{meta["command"]}` on {meta["date"]} ({meta["machine"]}).', '',
           f'Budget: {meta["steps"]} steps x global batch {meta["batch"]} for every run '
           f'({meta["steps"] * meta["batch"]:,} pairs seen); `full` = 18,000 training pairs, '
           '`quarter` = the first 4,500 of them; the same 1,200 held-out pairs for all. Values: '
           'mean +- sample standard deviation over the seeds (n = number of seeds). RSUM = '
           'sum of i2t and t2i R@1/5/10 in percent (max 600); colour / shape / size = zero-shot '
           'top-1 on the held-out single-object scenes (chance 1/8, 1/6, 1/2).', '',
           '| recipe | data | n | RSUM | colour | shape | size |', '|---|---|---|---|---|---|---|']
  for r in recipes:
    for size in SIZES:
      if (r, size) not in agg:
        continue
      a = agg[(r, size)]
      cells = [f'{a[m][0]:.1f} +- {a[m][1]:.1f}' if m == 'rsum' else
               f'{a[m][0]:.3f} +- {a[m][1]:.3f}' for m, _, _ in METRICS]
      lines.append(f'| {r} | {size} | {a["rsum"][2]} | ' + ' | '.join(cells) + ' |')
  missing = [f'{r}/{size}' for r in RECIPES for size in SIZES if (r, size) not in agg]
  seeds = sorted({rec['seed'] for rec in records})
  short = [f'{r}/{size}' for (r, size), a in agg.items() if a['rsum'][2] < len(seeds)]
  if missing or short:
    lines += ['', '**Incomplete**: ' + '; '.join(
        ([f'not run yet: {", ".join(missing)}'] if missing else []) +
        ([f'fewer seeds than {seeds}: {", ".join(short)}'] if short else [])) +
              ' (the script resumes: run it again with the same budget).']
  lines += ['', 'Quarter / full (mean over seeds): how much of its full-data result a recipe keeps '
            'with a quarter of the pairs.', '', '| recipe | RSUM | colour | shape | size |',
            '|---|---|---|---|---|']
  for r in recipes:
    if (r, 'full') in agg and (r, 'quarter') in agg:
      f, q = agg[(r, 'full')], agg[(r, 'quarter')]
      lines.append(f'| {r} | ' + ' | '.join(
          f'{q[m][0] / f[m][0]:.2f}' if f[m][0] else 'n/a' for m, _, _ in METRICS) + ' |')
  lines += ['', 'Recipes: ' + '; '.join(f'`{r}` = {RECIPES[r][1]} (`{RECIPES[r][0]}`)'
                                        for r in recipes) + '.', '',
            '## Raw runs', '', '| run | RSUM | colour | shape | size | wall |',
            '|---|---|---|---|---|---|']
  for rec in sorted(records, key=lambda x: (list(RECIPES).index(x['recipe']), x['size'],
                                            x['seed'])):
    wall = f'{rec["wall_s"] / 60:.1f} min' if rec.get('wall_s') else '-'
    lines.append(f'| {run_name(rec["recipe"], rec["size"], rec["seed"])} | {rec["rsum"]:.1f} | '
                 f'{rec["color_top1"]:.3f} | {rec["shape_top1"]:.3f} | {rec["size_top1"]:.3f} | {wall} |')
  return '\n'.join(lines) + '\n'


def plot(records: list[dict], path: str) -> None:
  """Bar plot (PIL): per recipe, RSUM / 600 and shape top-1 for full and quarter, with +-1 std
  whiskers and one dot per seed."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  agg = aggregate(records)
  recipes = [r for r in RECIPES if any(k[0] == r for k in agg)]
  panels = (('rsum', 'retrieval RSUM / 600', 600.0), ('shape_top1', 'zero-shot shape top-1', 1.0))
  w_group, bar, left, top, height = 110, 36, 50, 40, 260
  width = left + w_group * max(1, len(recipes)) + 20
  img = Image.new('RGB', (width * len(panels), top + height + 60), 'white')
  draw = ImageDraw.Draw(img)
  colors = {'full': (46, 98, 170), 'quarter': (230, 140, 40)}
  for p, (m, title, scale) in enumerate(panels):
    x0 = p * width
    draw.text((x0 + left, 10), title, fill='black')
    y = lambda v: top + height - v / scale * height  # noqa: E731
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
      yy = y(tick * scale)
      draw.line((x0 + left - 4, yy, x0 + width - 10, yy), fill=(225, 225, 225))
      draw.text((x0 + 5, yy - 6), f'{tick * scale:g}', fill='black')
    for i, r in enumerate(recipes):
      gx = x0 + left + i * w_group + 12
      for j, size in enumerate(SIZES):
        if (r, size) not in agg:
          continue
        mean, std, _ = agg[(r, size)][m]
        bx = gx + j * (bar + 6)
        draw.rectangle((bx, y(mean), bx + bar, y(0)), fill=colors[size])
        cx = bx + bar // 2
        draw.line((cx, y(max(0.0, mean - std)), cx, y(min(scale, mean + std))), fill='black',
                  width=2)
        for rec in records:
          if rec['recipe'] == r and rec['size'] == size:
            yy = y(rec[m])
            draw.ellipse((cx - 3, yy - 3, cx + 3, yy + 3), outline='black')
      draw.text((gx, top + height + 8), r, fill='black')
    for j, size in enumerate(SIZES):
      lx = x0 + left + j * 120
      draw.rectangle((lx, top + height + 32, lx + 14, top + height + 46), fill=colors[size])
      draw.text((lx + 20, top + height + 33), size, fill='black')
  img.save(path)


def load(path: str) -> list[dict]:
  """The result records in `path`, the newest record per (recipe, size, seed, steps, batch)."""
  if not os.path.exists(path):
    return []
  latest = {}
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise SystemExit(f'{path}:{n}: not a JSON record ({e})') from e
      key = (rec['recipe'], rec['size'], rec['seed'], rec['steps'], rec['batch'])
      if rec.get('wall_s') is None and key in latest:
        continue  # a read-back copy: keep the record with the run's wall time
      latest[key] = rec
  return list(latest.values())


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--recipes', default=','.join(RECIPES))
  parser.add_argument('--sizes', default=','.join(SIZES))
  parser.add_argument('--seeds', default='0,1')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--runs_dir', default='/tmp/data_efficiency')
  parser.add_argument('--results', default=os.path.join(ROOT, 'benchmarks', 'results',
                                                        'data_efficiency.jsonl'))
  parser.add_argument('--table', default=os.path.join(ROOT, 'docs', 'DATA_EFFICIENCY.md'))
  parser.add_argument('--plot', default=os.path.join(ROOT, 'docs', 'data_efficiency.png'))
  args = parser.parse_args(argv)
  recipes = [r for r in args.recipes.split(',') if r]
  unknown = [r for r in recipes if r not in RECIPES]
  if unknown:
    parser.error(f'--recipes: unknown {unknown}; known: {sorted(RECIPES)}')
  sizes = [s for s in args.sizes.split(',') if s]
  if any(s not in SIZES for s in sizes):
    parser.error(f'--sizes: each must be one of {sorted(SIZES)}')
  seeds = [int(s) for s in args.seeds.split(',') if s]
  os.makedirs(args.runs_dir, exist_ok=True)
  os.makedirs(os.path.dirname(args.results) or '.', exist_ok=True)
  runs = [(r, s, seed) for seed in seeds for s in sizes for r in recipes]
  t0 = time.time()
  for k, (r, s, seed) in enumerate(runs, 1):
    print(f'--- run {k}/{len(runs)} ({(time.time() - t0) / 60:.1f} min so far)', flush=True)
    rec = train(r, s, seed, args)
    if rec['wall_s'] is not None:  # trained now (a read-back run is in the results already)
      with open(args.results, 'a') as f:
        f.write(json.dumps(rec) + '\n')
  records = [r for r in load(args.results) if r['steps'] == args.steps and
             r['batch'] == args.batch]
  meta = {'command': 'python benchmarks/data_efficiency.py ' + ' '.join(argv or sys.argv[1:]),
          'date': datetime.date.today().isoformat(),
          'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}',
          'steps': args.steps, 'batch': args.batch}
  with open(args.table, 'w') as f:
    f.write(table(records, meta))
  plot(records, args.plot)
  print(json.dumps({'runs': len(records), 'table': args.table, 'plot': args.plot}))


if __name__ == '__main__':
  main()
