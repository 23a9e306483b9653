"""Standard benchmarks as config.evals.datasets presets, and CLIP_benchmark's result format.

An entry {'name': 'imagenet', 'benchmark': 'imagenet1k'} is the preset's keys with the entry's
own keys on top (e.g. a 'source' where the data lives, or 'max_examples'):

  imagenet1k  zero-shot top-1/top-5/mean per-class recall on tfds:imagenet2012:validation with
              the 1,000 class names (benchmark_data/imagenet_classes.txt, line i = label i; two
              names repeat, so classes are by position) and CLIP's 80 prompt templates
              (benchmark_data/clip_templates.txt); the images stream from the source at each
              evaluation (never all in memory).
  coco5k      retrieval on the 5,000 images / 25,010 captions of the Karpathy test split
              (tfds:coco_captions:test; TFDS's coco_captions splits are Karpathy's).
  flickr30k   retrieval on the 1,000 images / 5,000 captions of Flickr30k's Karpathy test split
              from a folder: source 'karpathy:<dir>' where <dir> holds dataset_flickr30k.json
              (Karpathy's file: {"images": [{"filename", "split", "sentences": [{"raw"}]}]}) and
              the images under <dir>/flickr30k-images/ (entry key image_dir).

Every entry's results are also written as <workdir>/eval/<name>.clip_benchmark.json with
CLIP_benchmark's fields: dataset, model, pretrained, task ('zeroshot_classification' with
acc1, acc5, mean_per_class_recall; 'zeroshot_retrieval' with image_retrieval_recall@k (text ->
image) and text_retrieval_recall@k (image -> text)), language.
"""

import json
import os

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'benchmark_data')
IMAGENET_CLASSES = os.path.join(DATA_DIR, 'imagenet_classes.txt')
CLIP_TEMPLATES = os.path.join(DATA_DIR, 'clip_templates.txt')

PRESETS = {
    'imagenet1k': {'kind': 'zeroshot', 'source': 'tfds:imagenet2012:validation',
                   'label_key': 'label', 'classes_file': IMAGENET_CLASSES,
                   'templates_file': CLIP_TEMPLATES, 'stream': True,
                   'dataset': 'imagenet1k'},
    'coco5k': {'kind': 'retrieval', 'source': 'tfds:coco_captions:test',
               'text_key': 'captions/text', 'dataset': 'mscoco_captions'},
    'flickr30k': {'kind': 'retrieval', 'split': 'test', 'image_dir': 'flickr30k-images',
                  'dataset': 'flickr30k'},
}


def with_preset(entry) -> dict:
  """The entry as a dict, its benchmark preset's keys filled in (the entry's own keys win);
  ValueError for an unknown benchmark or a flickr30k entry without a 'karpathy:<dir>' source."""
  entry = dict(entry)
  name = entry.get('benchmark')
  if not name:
    return entry
  if name not in PRESETS:
    raise ValueError(f'benchmark {name!r} is not one of {sorted(PRESETS)}')
  out = {**PRESETS[name], **entry}
  if name == 'flickr30k' and not str(out.get('source', '')).startswith('karpathy:'):
    raise ValueError("benchmark 'flickr30k' needs source 'karpathy:<dir>' (the folder with "
                     "dataset_flickr30k.json and flickr30k-images/)")
  return out


def clip_benchmark_record(entry: dict, results: dict, model: str, pretrained: str) -> dict | None:
  """CLIP_benchmark's JSON object for one entry's eval/<name>/* results (None for kinds it has
  no task for, e.g. linear_probe)."""
  prefix = f'eval/{entry["name"]}/'
  values = {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}
  if entry['kind'] == 'zeroshot':
    task = 'zeroshot_classification'
    metrics = {'acc1': values['top1'], 'mean_per_class_recall': values['mean_per_class_recall']}
    if 'top5' in values:
      metrics['acc5'] = values['top5']
  elif entry['kind'] == 'retrieval':
    task = 'zeroshot_retrieval'
    ks = sorted(int(k[len('i2t_r'):]) for k in values if k.startswith('i2t_r'))
    metrics = {f'image_retrieval_recall@{k}': values[f't2i_r{k}'] for k in ks}
    metrics.update({f'text_retrieval_recall@{k}': values[f'i2t_r{k}'] for k in ks})
  else:
    return None
  return {'dataset': entry.get('dataset') or entry['name'], 'model': model,
          'pretrained': pretrained, 'task': task, 'metrics': metrics, 'language': 'en'}


def write_clip_benchmark(eval_dir: str, entries, results: dict, model: str, pretrained: str,
                         suffix: str = '') -> list[str]:
  """Writes <eval_dir>/<name><suffix>.clip_benchmark.json for each entry that has results;
  returns the paths written."""
  paths = []
  for raw in entries:
    entry = with_preset(raw)
    if not any(k.startswith(f'eval/{entry["name"]}/') for k in results):
      continue
    record = clip_benchmark_record(entry, results, model, pretrained)
    if record is None:
      continue
    paths.append(os.path.join(eval_dir, f'{entry["name"]}{suffix}.clip_benchmark.json'))
    with open(paths[-1], 'w') as f:
      json.dump(record, f, indent=1)
  return paths
