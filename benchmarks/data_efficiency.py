"""The data-efficiency benchmark: each recipe (and its component ablations) trained on all of the
embedded pairs and on a quarter of them, from scratch and from unimodally pretrained towers, for
the same budget (steps x global batch), several seeds each.

python benchmarks/data_efficiency.py [--recipes clip,zerovl,declip,brivl,vicha]
    [--regimes scratch,pretrained] [--sizes full,quarter] [--seeds 0,1,2] [--ablations]
    [--ablation_cells scratch/quarter] [--variants V,..] [--shard i/n] [--teacher_steps 400]
    [--steps 200] [--batch 256] [--runs_dir /work/runs/effic] [--nice 15]
    [--results benchmarks/results/data_efficiency.jsonl] [--table docs/DATA_EFFICIENCY.md]
    [--plot docs/data_efficiency.png] [--report_only]

Every run is `python -m vlalign.main --config=<recipe's small config> --workdir=<runs_dir>/<run>`
with the budget, the seed, the learning rate held at the recipe's peak after a warm-up of
steps/6 (`optimizer.decay=constant`: with the recipes' cosine decay over a budget this short the
plain recipe never left its initial plateau, 2026-12-02: RSUM 2.9 at 200 x 256 against 196 at
step 200 of a 400-step schedule), a held-out evaluation every steps/4 (the learning curves) and (for
`quarter`) the training sizes overridden on the command line: the quarter is the first quarter
of each source (the embedded generator draws examples in order from one stream per source, so
it is a prefix of the full data; the held-out split is the same). `config.seed` changes
initialisation, dropout, augmentation and data order, not the data.

Regimes:
  scratch     towers initialised at random; the vocabulary is learned from the run's captions
              (a quarter's from the quarter's, as it would be for a smaller corpus).
  pretrained  first (once) `configs/pretrain_towers.py` trains the towers without any pairing
              (SimSiam on the images, MLM on the captions of the full training set, used as two
              unpaired collections) into <runs_dir>/pretrain_towers (lr 3e-3, for the text
              tower) and, with its `image` option (lr 1e-4, where SimSiam does not collapse),
              <runs_dir>/pretrain_image; every run then starts its image tower from the second
              and its text tower from the first (`model.image.init_from` /
              `model.text.init_from` = `vlalign:<workdir>`; projections and temperature fresh)
              and tokenizes with the vocabulary (`data.tokenizer.vocab_file`, a copy in
              <runs_dir>/pretrain_towers).
Ablations (--ablations): ABLATIONS[recipe], each a list of config overrides on top of the recipe.

Runs are sequential (a run uses every core; `--shard i/n` splits the plan between n such
processes, e.g. each pinned to a core with `taskset -c i`), niced (--nice), and resumable: a run already in
--results (same recipe, variant, regime, size, seed and budget) is skipped, a workdir already
holding eval/heldout.json of the budget's last step is read back; each finished run is appended
to --results with its learning curve. The table (data_efficiency_report.py) and the plot
(plot_data_efficiency.py) are rewritten from all results at the end.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data_efficiency_report as report  # noqa: E402  pylint: disable=g-import-not-at-top
import plot_data_efficiency  # noqa: E402  pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = report.RECIPES
REGIMES = ('scratch', 'pretrained')
PRETRAIN_CONFIG = 'configs/pretrain_towers.py'
PRETRAIN_NAME = 'pretrain_towers'
# The pretraining runs: workdir name -> config option (the image tower's run is the second).
PRETRAIN_RUNS = {PRETRAIN_NAME: '', 'pretrain_image': 'image'}
# The embedded data's training sizes of the small configs (config_lib's defaults).
FULL_SIZES = {'studio': 12000, 'sketch': 6000}
SIZES = report.SIZES
# recipe -> {variant: (overrides, description)}; '{batch}' is replaced by the global batch.
ABLATIONS = {
    'clip': {},
    'zerovl': {
        'no_mixup': (['mixup.enabled=False'], 'without coin-flip mixup'),
        'no_debiased': (['data.mixing=weighted'], 'per-example mixing instead of debiased sampling'),
        'no_text_aug': (['data.zerovl_text_aug=0.0'], 'without text augmentation'),
        'no_accum': (['grad_accum.micro_batches=1'], 'one batch instead of 2 micro-batches'),
        'learned_temp': (['model.temperature_init=0.07', 'model.learn_temperature=True'],
                         "the demo's temperature (learned from 0.07) instead of a fixed 0.02"),
    },
    'declip': {
        'no_iss': (['method.declip.weights.iss=0.0'], 'without image SimSiam'),
        'no_tss': (['method.declip.weights.tss=0.0'], 'without MLM'),
        'no_nns': (['method.declip.weights.nns=0.0'], 'without nearest-neighbour supervision'),
        'mvs_only': (['method.declip.weights.iss=0.0', 'method.declip.weights.tss=0.0',
                      'method.declip.weights.nns=0.0'], 'multi-view contrastive loss alone'),
    },
    'brivl': {
        'queue1': (['method.brivl.queue_size={batch}'], 'queue of one batch of keys'),
        'no_momentum': (['method.brivl.momentum=0.0'], 'momentum encoders = the current towers'),
    },
    'vicha': {
        'no_mae': (['method.vicha.mim_weight=0.0'], 'without the MAE branch'),
        'no_concepts': (['method.vicha.use_concepts=False'], 'without visual concepts'),
        'no_hier': (['method.vicha.hier_weight=0.0'], 'without hierarchical alignment'),
        'no_distill': (['method.vicha.alpha=0.0'], 'without momentum distillation'),
    },
}


def run_name(recipe: str, variant: str, regime: str, size: str, seed: int) -> str:
  """The run's workdir name, e.g. 'declip-no_iss_pretrained_quarter_s2'."""
  return f'{recipe}{"-" + variant if variant else ""}_{regime}_{size}_s{seed}'


def image_pretrain_dir(pretrain_dir: str) -> str:
  """The image tower's pretraining workdir, next to <runs_dir>/pretrain_towers."""
  return os.path.join(os.path.dirname(pretrain_dir), 'pretrain_image')


def regime_overrides(regime: str, pretrain_dir: str) -> list[str]:
  """The config overrides of a regime ('pretrained': the text tower and the vocabulary from the
  pretraining workdir, the image tower from its `image` twin)."""
  if regime == 'scratch':
    return []
  if regime != 'pretrained':
    raise ValueError(f'unknown regime {regime!r}; known: {REGIMES}')
  return [f'model.image.init_from=vlalign:{image_pretrain_dir(pretrain_dir)}',
          f'model.text.init_from=vlalign:{pretrain_dir}',
          f'data.tokenizer.vocab_file={os.path.join(pretrain_dir, "vocab.txt")}']


def command(recipe: str, variant: str, regime: str, size: str, seed: int, steps: int,
            batch: int, workdir: str, pretrain_dir: str = '', concepts: str = '') -> list[str]:
  """The vlalign.main command line of one run (`concepts`: ViCHA's concepts file)."""
  overrides = [f'seed={seed}', f'total_steps={steps}', f'data.global_batch={batch}',
               f'optimizer.warmup_steps={max(1, steps // 6)}', 'optimizer.decay=constant',
               f'checkpoint_every={steps}',
               f'log_every={max(1, steps // 12)}', f'eval_every={max(1, steps // 4)}']
  overrides += [f'data.embedded.train_sizes.{source}={n // SIZES[size]}'
                for source, n in FULL_SIZES.items()]
  if variant:
    overrides += [o.format(batch=batch) for o in ABLATIONS[recipe][variant][0]]
  overrides += regime_overrides(regime, pretrain_dir)
  if recipe == 'vicha' and concepts:
    overrides.append(f'method.vicha.concepts_file={concepts}')
  return ([sys.executable, '-m', 'vlalign.main', f'--config={RECIPES[recipe][0]}',
           f'--workdir={workdir}'] + [f'--config.{o}' for o in overrides])


def teacher_command(workdir: str, steps: int) -> list[str]:
  """ViCHA's concepts teacher: the plain recipe on all pairs, `steps` x 256, seed 0."""
  return ([sys.executable, '-m', 'vlalign.main', f'--config={RECIPES["clip"][0]}',
           f'--workdir={workdir}'] +
          [f'--config.{o}' for o in (f'total_steps={steps}', 'data.global_batch=256',
                                     f'optimizer.warmup_steps={max(1, steps // 12)}',
                                     f'checkpoint_every={steps}', f'eval_every={steps}',
                                     'seed=0')])


def ensure_concepts(args) -> str:
  """ViCHA's concepts file (once): ViCHA ranks concept words per image with CLIP, a model
  trained on far more pairs than ViCHA aligns; here the teacher is the plain recipe trained on
  all pairs for --teacher_steps x 256 (<runs_dir>/concepts_teacher), then
  `python -m vlalign.tools.concepts` writes <runs_dir>/vicha_concepts.jsonl."""
  out = os.path.join(args.runs_dir, 'vicha_concepts.jsonl')
  if os.path.exists(out):
    return out
  teacher = os.path.join(args.runs_dir, 'concepts_teacher')
  if not os.path.exists(os.path.join(teacher, 'eval', 'heldout.json')):
    rc, wall = _run(teacher_command(teacher, args.teacher_steps),
                    os.path.join(args.runs_dir, 'concepts_teacher.log'), args.nice)
    if rc != 0:
      raise SystemExit(f'[concepts_teacher] failed (exit {rc}); see {teacher}.log')
    print(f'[concepts_teacher] done in {wall / 60:.1f} min', flush=True)
  cmd = [sys.executable, '-m', 'vlalign.tools.concepts', f'--workdir={teacher}',
         f'--output={out}.tmp']
  log = os.path.join(args.runs_dir, 'vicha_concepts.log')
  rc, _ = _run(cmd, log, args.nice)
  if rc != 0:
    raise SystemExit(f'[vicha concepts] failed (exit {rc}); see {log}')
  os.replace(out + '.tmp', out)
  return out


def pretrain_command(workdir: str, seed: int = 0, option: str = '') -> list[str]:
  """A unimodal pretraining run (its budget is the config's)."""
  return [sys.executable, '-m', 'vlalign.main',
          f'--config={PRETRAIN_CONFIG}' + (f':{option}' if option else ''),
          f'--workdir={workdir}', f'--config.seed={seed}']


def _run(cmd: list[str], log_path: str, nice: int) -> tuple[int, float]:
  print(' '.join(cmd[1:]), flush=True)
  t0 = time.time()
  with open(log_path, 'w') as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False,
                          preexec_fn=(lambda: os.nice(nice)) if nice else None)
  return proc.returncode, time.time() - t0


def read_metrics(workdir: str) -> list[dict]:
  """The rows of <workdir>/metrics.jsonl ([] when absent)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def curves(rows: list[dict]) -> dict:
  """Learning curves from metrics rows: held-out RSUM and training loss by step."""
  ev = {r['step']: r['eval/retrieval/rsum'] for r in rows if 'eval/retrieval/rsum' in r}
  tr = {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}
  return {'rsum': sorted(ev.items()), 'loss': sorted(tr.items())}


def ensure_pretrained(args) -> str:
  """Runs the unimodal pretraining runs once (PRETRAIN_RUNS); returns the text tower's workdir
  (with vocab.txt copied into it; the image tower's is image_pretrain_dir of it)."""
  for name, option in PRETRAIN_RUNS.items():
    workdir = os.path.join(args.runs_dir, name)
    if os.path.exists(os.path.join(workdir, 'eval', 'heldout.json')):
      continue
    # not started, or stopped early: (re)start, it resumes
    rc, wall = _run(pretrain_command(workdir, option=option),
                    os.path.join(args.runs_dir, name + '.log'), args.nice)
    if rc != 0:
      raise SystemExit(f'[{name}] failed (exit {rc}); see {workdir}.log')
    print(f'[{name}] done in {wall / 60:.1f} min', flush=True)
  workdir = os.path.join(args.runs_dir, PRETRAIN_NAME)
  vocab = os.path.join(workdir, 'vocab.txt')
  if not os.path.exists(vocab):
    from vlalign import config_lib, train  # pylint: disable=import-outside-toplevel
    config = config_lib.load_json(os.path.join(workdir, 'config.json'))
    shutil.copyfile(train.prepare_data(config)['vocab'], vocab + '.tmp')
    os.replace(vocab + '.tmp', vocab)
  return workdir


def train_one(key: tuple, args, pretrain_dir: str, concepts: str = '') -> dict:
  """Trains one run (or reads back a finished workdir) and returns its result record."""
  recipe, variant, regime, size, seed = key
  name = run_name(*key)
  workdir = os.path.join(args.runs_dir, name)
  path = os.path.join(workdir, 'eval', 'heldout.json')
  wall = None
  if not os.path.exists(path):
    cmd = command(recipe, variant, regime, size, seed, args.steps, args.batch, workdir,
                  pretrain_dir, concepts)
    rc, wall = _run(cmd, os.path.join(args.runs_dir, f'{name}.log'), args.nice)
    if rc != 0 or not os.path.exists(path):
      raise SystemExit(f'[{name}] failed (exit {rc}); see {os.path.join(args.runs_dir, name)}.log')
  with open(path) as f:
    ev = json.load(f)
  if ev['step'] != args.steps:
    raise SystemExit(f'{path}: evaluated at step {ev["step"]}, expected {args.steps} (a run '
                     'with another budget is in this workdir; use another --runs_dir)')
  rec = {'recipe': recipe, 'variant': variant, 'regime': regime, 'size': size, 'seed': seed,
         'steps': args.steps, 'batch': args.batch,
         'train_pairs': sum(FULL_SIZES.values()) // SIZES[size], 'wall_s': wall,
         **{key: ev[src] for key, src, _ in report.METRICS},
         'curve': curves(read_metrics(workdir))}
  print(f'[{name}] ' + ' '.join(f'{k}={rec[k]:.3f}' for k, _, _ in report.METRICS)
        + (f' ({wall / 60:.1f} min)' if wall else ' (read back)'), flush=True)
  return rec


def plan(args) -> list[tuple]:
  """The runs asked for, as (recipe, variant, regime, size, seed): the recipes first (by seed,
  then regime, size, recipe), then with --ablations each recipe's ablations in the
  --ablation_cells (regime/size pairs), by seed; with --shard i/n every n-th of them from the
  i-th (for n processes side by side, e.g. one per core)."""
  recipes = [r for r in args.recipes.split(',') if r]
  runs = [(r, '', regime, s, seed) for seed in args.seeds for regime in args.regimes
          for s in args.sizes for r in recipes]
  if args.ablations:
    runs += [(r, v, regime, s, seed) for seed in args.seeds for regime, s in args.ablation_cells
             if regime in args.regimes and s in args.sizes for r in recipes for v in ABLATIONS[r]
             if not args.variants or v in args.variants]
  i, n = args.shard
  return runs[i::n]


def parse_args(argv=None) -> argparse.Namespace:
  """The command line (see the module docstring)."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--recipes', default=','.join(RECIPES))
  parser.add_argument('--regimes', default=','.join(REGIMES))
  parser.add_argument('--sizes', default=','.join(SIZES))
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--ablations', action='store_true', help='also run ABLATIONS[recipe]')
  parser.add_argument('--ablation_cells',
                      default=','.join('/'.join(c) for c in report.ABLATION_CELLS),
                      help='regime/size pairs the ablations run in (comma-separated)')
  parser.add_argument('--variants', default='',
                      help='with --ablations: only these ablations (comma-separated; default all)')
  parser.add_argument('--shard', default='0/1', help='i/n: run every n-th planned run from i')
  parser.add_argument('--teacher_steps', type=int, default=400,
                      help="steps x 256 of ViCHA's concepts teacher (the plain recipe)")
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--runs_dir', default='/work/runs/effic')
  parser.add_argument('--nice', type=int, default=15, help='niceness of the runs (0: none)')
  parser.add_argument('--results', default=os.path.join(ROOT, 'benchmarks', 'results',
                                                        'data_efficiency.jsonl'))
  parser.add_argument('--table', default=os.path.join(ROOT, 'docs', 'DATA_EFFICIENCY.md'))
  parser.add_argument('--plot', default=os.path.join(ROOT, 'docs', 'data_efficiency.png'))
  parser.add_argument('--report_only', action='store_true',
                      help='rewrite the table and plot from --results, train nothing')
  args = parser.parse_args(argv)
  for name, known in (('recipes', RECIPES), ('regimes', REGIMES), ('sizes', SIZES)):
    bad = [x for x in getattr(args, name).split(',') if x and x not in known]
    if bad:
      parser.error(f'--{name}: unknown {bad}; known: {list(known)}')
  args.regimes = [x for x in args.regimes.split(',') if x]
  args.sizes = [x for x in args.sizes.split(',') if x]
  args.seeds = [int(s) for s in args.seeds.split(',') if s]
  args.variants = [v for v in args.variants.split(',') if v]
  known = {v for r in args.recipes.split(',') if r in ABLATIONS for v in ABLATIONS[r]}
  if set(args.variants) - known:
    parser.error(f'--variants: unknown {sorted(set(args.variants) - known)}; known: {sorted(known)}')
  cells = [tuple(c.split('/')) for c in args.ablation_cells.split(',') if c]
  bad = [c for c in cells if len(c) != 2 or c[0] not in REGIMES or c[1] not in SIZES]
  if bad:
    parser.error(f'--ablation_cells: {bad} are not regime/size pairs of {REGIMES} / {list(SIZES)}')
  args.ablation_cells = cells
  try:
    i, n = (int(x) for x in args.shard.split('/'))
    assert 0 <= i < n
  except (ValueError, AssertionError):
    parser.error(f'--shard: {args.shard!r} is not i/n with 0 <= i < n')
  args.shard = (i, n)
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  os.makedirs(args.runs_dir, exist_ok=True)
  os.makedirs(os.path.dirname(args.results) or '.', exist_ok=True)
  runs = [] if args.report_only else plan(args)
  done = {report.key(r) for r in report.load(args.results)
          if r['steps'] == args.steps and r['batch'] == args.batch}
  runs = [k for k in runs if k not in done]
  pretrain_dir = os.path.join(args.runs_dir, PRETRAIN_NAME)
  if any(k[2] == 'pretrained' for k in runs):
    pretrain_dir = ensure_pretrained(args)
  concepts = ensure_concepts(args) if any(k[0] == 'vicha' for k in runs) else ''
  t0 = time.time()
  for n, k in enumerate(runs, 1):
    print(f'--- run {n}/{len(runs)} ({(time.time() - t0) / 60:.1f} min so far)', flush=True)
    rec = train_one(k, args, pretrain_dir, concepts)
    with open(args.results, 'a') as f:
      f.write(json.dumps(rec) + '\n')
  records = [r for r in report.load(args.results)
             if r['steps'] == args.steps and r['batch'] == args.batch]
  meta = report.meta(argv, args.steps, args.batch)
  report.write(args.table, report.table(records, meta, ABLATIONS, args.ablation_cells))
  plot_data_efficiency.plot(records, args.plot)
  print(json.dumps({'runs': len(records), 'table': args.table, 'plot': args.plot}))


if __name__ == '__main__':
  main()
