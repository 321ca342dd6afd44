"""Package layout: the ``suites/`` folder at the top of the repository is installed as the data
package ``robustlab._suites`` so that suites are found after a non-editable ``pip install .``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["robustlab", "robustlab.*"]) + ["robustlab._suites"],
    package_dir={"robustlab._suites": "suites"},
)
