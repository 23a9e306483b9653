"""The main entry point end to end on the embedded data (tiny config), and exact resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_main(workdir, cache, *overrides, devices=1, cwd=ROOT):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  cmd = [sys.executable, '-m', 'vlalign.main',
         f'--config={os.path.join(ROOT, "configs", "demo.py")}:tiny', f'--workdir={workdir}',
         *overrides]
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def losses(workdir):
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


@pytest.fixture(scope='module')
def straight(tmp_path_factory, cache):
  workdir = tmp_path_factory.mktemp('straight')
  # A relative --workdir, as in the README (orbax itself needs absolute paths).
  run_main('straight_run', cache, cwd=workdir)
  return workdir / 'straight_run'


def test_main_trains_logs_and_evaluates(straight):
  rows = read_metrics(straight)
  train_rows = [r for r in rows if 'train/loss' in r]
  assert [r['step'] for r in train_rows] == [2, 4, 6]
  for key in ('train/lr', 'train/temperature', 'train/examples_per_sec', 'train/grad_norm'):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert train_rows[0]['train/lr'] > 0
  with open(os.path.join(straight, 'eval', 'heldout.json')) as f:
    ev = json.load(f)
  assert ev['step'] == 6
  for key in ('i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10'):
    assert 0.0 <= ev[f'eval/retrieval/{key}'] <= 1.0
  assert ev['eval/retrieval/i2t_r1'] <= ev['eval/retrieval/i2t_r5'] <= ev['eval/retrieval/i2t_r10']
  assert 0.0 <= ev['eval/zeroshot/color_top1'] <= 1.0
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(straight))


def test_half_then_resume_equals_straight(straight, tmp_path, cache):
  run_main(tmp_path, cache, '--config.stop_at_step=3')
  assert not os.path.exists(tmp_path / 'eval')
  proc = run_main(tmp_path, cache)
  assert 'Resumed from checkpoint at step 3' in proc.stderr
  want, got = losses(straight), losses(tmp_path)
  assert sorted(got) == [2, 3, 4, 6]
  for step in (4, 6):
    np.testing.assert_allclose(got[step], want[step], rtol=1e-6)
  with open(os.path.join(straight, 'eval', 'heldout.json')) as f:
    a = json.load(f)
  with open(os.path.join(tmp_path, 'eval', 'heldout.json')) as f:
    b = json.load(f)
  for k in a:
    np.testing.assert_allclose(b[k], a[k], atol=1e-6, err_msg=k)


def test_8_devices_match_1_device(straight, tmp_path, cache):
  run_main(tmp_path, cache, devices=8)
  want, got = losses(straight), losses(tmp_path)
  for step in want:
    np.testing.assert_allclose(got[step], want[step], rtol=2e-5)
  # XLA's FLOPs are per device: the model's work splits 8 ways; the optimizer update (about 20
  # FLOPs per parameter) is replicated, so 8 x per-device is a little above the 1-device figure.
  key = 'perf/flops_per_device_step'
  f1 = [r[key] for r in read_metrics(straight) if key in r][-1]
  f8 = [r[key] for r in read_metrics(tmp_path) if key in r][-1]
  assert f1 < 8 * f8 < 1.5 * f1, (f1, f8)


def test_bad_config_field_is_named(tmp_path, cache):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
                         f'--workdir={tmp_path}', '--config.optimizer.name=sgdx'], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'config.optimizer.name' in proc.stderr and 'sgdx' in proc.stderr


def test_main_defaults_to_the_demo_config():
  from vlalign import main as main_lib
  assert main_lib._DEMO == os.path.join(ROOT, 'configs', 'demo.py')
  assert os.path.exists(main_lib._DEMO)


def test_checkpoint_from_another_model_is_refused_with_the_parameters_listed(straight, tmp_path,
                                                                             cache):
  import shutil
  shutil.copytree(straight / 'checkpoints', tmp_path / 'checkpoints')
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
                         f'--workdir={tmp_path}', '--config.model.embed_dim=24'], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'vlalign: checkpoint ' in proc.stderr  # one message, not our traceback
  assert 'params/image_proj/kernel: in checkpoint (32, 32) float32, config builds (32, 24)' in proc.stderr


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_standalone_evaluate_reproduces_the_runs_final_eval(straight, cache):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'vlalign.evaluate',
                         f'--config={os.path.join(ROOT, "configs", "demo.py")}:tiny',
                         f'--workdir={straight}'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  with open(straight / 'eval' / 'heldout.json') as f:
    want = json.load(f)
  assert got['step'] == want['step'] == 6
  assert set(got) == set(want) and len(want) > 5
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
  with open(straight / 'eval' / 'heldout_step6.json') as f:
    assert json.load(f) == got
  missing = subprocess.run([sys.executable, '-m', 'vlalign.evaluate',
                            f'--config={os.path.join(ROOT, "configs", "demo.py")}:tiny',
                            f'--workdir={straight}', '--checkpoint=5'], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0
  assert 'no checkpoint at step 5' in missing.stderr.strip().splitlines()[-1]


def _tool(module, cache, *args):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', module,
                         f'--config={os.path.join(ROOT, "configs", "demo.py")}:tiny', *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [json.loads(line) for line in proc.stdout.strip().splitlines() if line.startswith('{')]


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_embed_export_and_search_tools(straight, cache, tmp_path):
  index = tmp_path / 'index'
  meta, = _tool('vlalign.tools.embed', cache, f'--workdir={straight}', f'--output={index}',
                '--dtype=float16')
  assert meta['step'] == 6 and meta['count'] == 100 and meta['dim'] == 32
  img = np.load(index / 'image_emb.npy', allow_pickle=False)
  assert img.dtype == np.float16 and img.shape == (100, 32)
  np.testing.assert_allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1.0, atol=2e-3)
  with open(index / 'items.jsonl') as f:
    items = [json.loads(line) for line in f]
  assert [it['row'] for it in items] == list(range(100)) and items[3]['text']
  # An indexed image as the query finds itself first, at cosine ~1.
  hits = _tool('vlalign.tools.search', cache, f'--workdir={straight}', f'--index={index}',
               '--image=row:7', '--k=3', f'--output={tmp_path / "img.png"}')
  assert hits[0]['row'] == 7 and abs(hits[0]['score'] - 1.0) < 3e-3
  assert [h['score'] for h in hits] == sorted((h['score'] for h in hits), reverse=True)
  # image + text with the text weighted 0 is the image query.
  same = _tool('vlalign.tools.search', cache, f'--workdir={straight}', f'--index={index}',
               '--image=row:7', '--text=a red circle', '--text_weight=0', '--k=3',
               f'--output={tmp_path / "same.png"}')
  assert [h['row'] for h in same] == [h['row'] for h in hits]
  text_hits = _tool('vlalign.tools.search', cache, f'--workdir={straight}', f'--index={index}',
                    '--text=a red circle', f'--output={tmp_path / "text.png"}')
  # An index exported from another run (its recorded fingerprint differs): one line, exit 1.
  with open(index / 'meta.json') as f:
    meta = json.load(f)
  assert len(meta['fingerprint']) == 16
  meta['fingerprint'] = '0' * 16
  with open(index / 'meta.json', 'w') as f:
    json.dump(meta, f)
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  other = subprocess.run([sys.executable, '-m', 'vlalign.tools.search',
                          f'--config={os.path.join(ROOT, "configs", "demo.py")}:tiny',
                          f'--workdir={straight}', f'--index={index}', '--text=a red circle'],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert other.returncode == 1 and 'Traceback' not in other.stderr
  assert other.stderr.strip().splitlines()[-1].startswith(
      f'vlalign.tools.search: {index} was exported from another run or checkpoint (fingerprint '
      f'0000000000000000')
  assert len(text_hits) == 5
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(tmp_path / 'text.png') as sheet:
    assert sheet.size == (8 + 5 * 168, 40 + 160 + 70)


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_demo_towers_with_grey_views_train_through_main(tmp_path, cache):
  """The default demo's image tower (64 px, the hybrid stem: a 4x4 patchify then stride-2
  convolutions down to a 2 x 2 token grid, run as matmuls), at tiny width, with data.grayscale, trains through
  main: finite, falling loss, and the checkpoint holds that stem."""
  from vlalign import config_lib, train  # pylint: disable=g-import-not-at-top
  demo = config_lib.load_config_module(os.path.join(ROOT, 'configs', 'demo.py'))
  full = demo.get_config('')
  towers = {'data.image_size': full.data.image_size, 'data.resize_size': full.data.resize_size,
            'model.image.patch': full.model.image.patch, 'model.image.stem': full.model.image.stem,
            'model.image.stem_conv': full.model.image.stem_conv}
  assert towers == {'data.image_size': 64, 'data.resize_size': 68, 'model.image.patch': 32,
                    'model.image.stem': 'hybrid', 'model.image.stem_conv': 'matmul'}
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
                         f'--workdir={tmp_path}', '--config.data.grayscale=0.5',
                         '--config.evals.heldout=False',
                         *[f'--config.{k}={v}' for k, v in towers.items()]],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  config = demo.get_config('tiny')
  config.data.update(image_size=64, resize_size=68, cache_dir=str(cache))
  config.model.image.update(patch=32, stem='hybrid')
  r = train.restore_for_inference(config, str(tmp_path))
  assert r['step'] == 6
  tower = r['params']['image_tower']
  assert tower['pos_embed'].shape == (1, 1 + 2 * 2, 32)
  # patchify 4 -> 16 x 16, then convs to 8, 4, 2 (conv0 and conv1 are what the patchify replaced)
  assert sorted(k for k in tower['conv_stem'] if k.startswith(('conv', 'patchify'))) == [
      'conv2', 'conv3', 'conv4', 'patchify']
  assert tower['conv_stem']['patchify']['kernel'].shape[:2] == (4, 4)
  loss = losses(tmp_path)
  assert all(np.isfinite(v) for v in loss.values()) and loss[6] < loss[2]
