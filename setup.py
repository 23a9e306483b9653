"""vlalign: dual-encoder vision-language contrastive pretraining in JAX/Flax."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
REQUIREMENTS = [l.strip() for l in (HERE / 'requirements.txt').read_text().splitlines()
                if l.strip() and not l.startswith('#')]

setup(
    name='vlalign',
    version='0.1.0',
    description='Dual-encoder (two-tower) vision-language contrastive pretraining in JAX/Flax',
    packages=find_packages(include=['vlalign', 'vlalign.*']),
    package_data={'vlalign': ['data/*.json', 'data/embedded/*.json', 'data/embedded/*.txt',
                             'data/assets/*.gz']},
    python_requires='>=3.10',
    install_requires=REQUIREMENTS,
)
