"""Golden datasets: the case model, the importers and the content hash (PRODUCT §5).

- :mod:`~pairshift.datasets.cases`: :class:`Case`, :class:`Assertion`, the checks every case passes at import
  (:func:`build_case`) and :func:`dataset_hash`;
- :mod:`~pairshift.datasets.formats`: pairshift JSONL, OpenAI Evals JSONL, plain CSV and :func:`load_dataset`,
  which picks the importer for a file;
- :mod:`~pairshift.datasets.promptfoo`: the ``promptfooconfig.yaml`` importer;
- :mod:`~pairshift.datasets.readers`: JSON lines and promptfoo-style CSV rows, shared by the importers.

Everything public is re-exported here: ``from pairshift.datasets import X`` is the import to use.
"""

from pairshift.datasets.cases import (
    DETERMINISTIC_TYPES,
    KNOWN_ASSERTION_TYPES,
    MODEL_GRADED_TYPES,
    PROMPTFOO_UNSUPPORTED_TYPES,
    Assertion,
    Case,
    DatasetError,
    as_list,
    base_type,
    build_case,
    check_assertion,
    dataset_hash,
    parse_schema,
    render_value,
)
from pairshift.datasets.formats import (
    load_csv,
    load_dataset,
    load_jsonl,
    load_openai_evals,
)
from pairshift.datasets.promptfoo import load_promptfoo
from pairshift.datasets.readers import assertion_from_cell

__all__ = [
    "DETERMINISTIC_TYPES",
    "KNOWN_ASSERTION_TYPES",
    "MODEL_GRADED_TYPES",
    "PROMPTFOO_UNSUPPORTED_TYPES",
    "Assertion",
    "Case",
    "DatasetError",
    "as_list",
    "assertion_from_cell",
    "base_type",
    "build_case",
    "check_assertion",
    "dataset_hash",
    "load_csv",
    "load_dataset",
    "load_jsonl",
    "load_openai_evals",
    "load_promptfoo",
    "parse_schema",
    "render_value",
]
