"""Package list for setuptools; the rest of the metadata is in pyproject.toml.

Found rather than listed, so a new subpackage ships without anyone editing a
list; rules/ (top level, mapped by pyproject.toml's package-dir) is added by name.
"""
from setuptools import find_namespace_packages, setup

setup(packages=find_namespace_packages(include=["refactor", "refactor.*", "emulator", "emulator.*"],
                                       exclude=["*.__pycache__"]) + ["refactor.rules_data"])
