"""The old import path of two preprocessing helpers, kept only until their callers have moved.

Import from :mod:`lunglib.preprocess` instead. :mod:`lunglib.inference.segment` and
:mod:`lunglib.training.inputs` still import these names from here; delete this module once they
don't.
"""

from lunglib.preprocess.boxes import check_patch_shape, extract_patch

__all__ = ["check_patch_shape", "extract_patch"]
