"""Griffe extension for the API reference: docstrings that bnlab builds from a template.

bnlab writes one docstring template per layer family and gives each class its copy at import
time (``__doc__ = _DOC.format(rank=..., shape=...)`` in ``src/bnlab/layers/batchnorm.py``,
``batch_renorm.py``, ``ghost.py``). Griffe reads the source without running it, so it sees no
docstring for those classes. For every class whose body assigns ``__doc__`` and that has no
literal docstring, this extension imports the class and takes the docstring it has at run time.
Nothing else is inspected: every other docstring, signature and annotation comes from the source.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import griffe


class TemplatedDocstrings(griffe.Extension):
    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.docstring is not None or "__doc__" not in cls.members:
            return
        runtime = getattr(importlib.import_module(cls.module.path), cls.name, None)
        doc = runtime.__dict__.get("__doc__") if runtime is not None else None
        if doc:
            cls.docstring = griffe.Docstring(
                inspect.cleandoc(doc), lineno=cls.members["__doc__"].lineno, parent=cls
            )
