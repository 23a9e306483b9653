"""vlalign: dual-encoder vision-language contrastive pretraining in JAX/Flax.

A wheel (`pip install .`) carries the recipe configs as vlalign/configs/*.py (from configs/),
the evaluation templates and benchmark data files, and the console scripts of vlalign/cli.py.
"""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
REQUIREMENTS = [l.strip() for l in (HERE / 'requirements.txt').read_text().splitlines()
                if l.strip() and not l.startswith('#')]
SCRIPTS = {'vlalign-train': 'train', 'vlalign-eval': 'evaluate', 'vlalign-embed': 'embed',
           'vlalign-search': 'search', 'vlalign-summary': 'summary', 'vlalign-convert': 'convert',
           'vlalign-build-vocab': 'build_vocab', 'vlalign-concepts': 'concepts',
           'vlalign-import-weights': 'import_weights', 'vlalign-export': 'export',
           'vlalign-data-service': 'data_service'}

setup(
    name='vlalign',
    version='0.1.0',
    description='Dual-encoder (two-tower) vision-language contrastive pretraining in JAX/Flax',
    packages=find_packages(include=['vlalign', 'vlalign.*']) + ['vlalign.configs'],
    package_dir={'vlalign.configs': 'configs'},
    package_data={'vlalign': ['data/*.json', 'data/embedded/*.json', 'data/embedded/*.txt',
                              'data/assets/*.gz', 'evaluate/*.txt',
                              'evaluate/benchmark_data/*.txt'],
                  'vlalign.configs': ['*.py']},
    entry_points={'console_scripts': [f'{name}=vlalign.cli:{fn}' for name, fn in SCRIPTS.items()]},
    python_requires='>=3.10',
    install_requires=REQUIREMENTS,
)
