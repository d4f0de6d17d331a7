"""A proposed feature view, read without running it, and the checks a review starts from.

People propose new Feast definitions from a notebook as Python source, written like a file of a
Feast repository. The ``features`` service takes a proposal in three steps, each in its own
modules; this one gathers their public names, so ``from .proposals import ...`` keeps working.

- Reading (:mod:`.proposalread`): :func:`read_definition` parses the source with :mod:`ast`, so
  the proposed code is never executed, imported or compiled, and accepts only a small, fixed
  vocabulary of Feast definitions (:mod:`.proposaldata`). Anything else is refused with a
  :class:`DefinitionError` that names the line. What comes out is plain data (JSON-ready dicts),
  never a live object.
- Checking (:mod:`.proposalcheck`): :func:`check` compares that data with the project's catalog
  (:mod:`.catalog`): what is missing for a complete definition, names that collide, duplicates
  of existing views and features (by a normalised :func:`fingerprint` of source, timestamp and
  features: :mod:`.proposalprints`) and near-identical names.
- Building (:mod:`.proposalbuild`): :func:`to_feast` builds the real Feast objects from the data,
  for ``FeatureStore.apply``, once a project owner approved it. Only it imports Feast.
"""

from __future__ import annotations

from .proposalbuild import to_feast
from .proposalcheck import SIMILAR_RATIO, check
from .proposaldata import (
    ALLOWED,
    ARGUMENTS,
    DURATION_UNITS,
    IMPORTABLE,
    KINDS,
    NAMES,
    PRIMITIVE_TYPES,
    VALUE_TYPES,
    DefinitionError,
)
from .proposalprints import feature_fingerprints, fingerprint, normalise_path
from .proposalread import MAX_SOURCE_CHARS, read_definition

__all__ = [
    "ALLOWED",
    "ARGUMENTS",
    "DURATION_UNITS",
    "IMPORTABLE",
    "KINDS",
    "MAX_SOURCE_CHARS",
    "NAMES",
    "PRIMITIVE_TYPES",
    "SIMILAR_RATIO",
    "VALUE_TYPES",
    "DefinitionError",
    "check",
    "feature_fingerprints",
    "fingerprint",
    "normalise_path",
    "read_definition",
    "to_feast",
]
