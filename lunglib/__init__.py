"""lunglib: classify and segment lung cancer in chest CT with convolutional neural networks.

The package is layered so that data flows one way; a lower layer never imports a higher one:

1. I/O -- :mod:`lunglib.dicom` (DICOM series), :mod:`lunglib.datasets` (public dataset layouts),
   :mod:`lunglib.synthetic` (the embedded synthetic cohort)
2. :mod:`lunglib.preprocess` and :mod:`lunglib.cache` -- HU volumes to model-ready arrays
3. :mod:`lunglib.augment` -- rotation, flipping, scaling, translation
4. models -- :mod:`lunglib.cnn`, :mod:`lunglib.unet`
5. :mod:`lunglib.splits`, :mod:`lunglib.train`, :mod:`lunglib.tune`
6. :mod:`lunglib.metrics`
7. :mod:`lunglib.viz`
8. :mod:`lunglib.pipeline` and :mod:`lunglib.cli`

Importing ``lunglib`` is cheap: TensorFlow loads only when a model module is imported.
"""

from lunglib.dicom import CTScan, DicomLoadError, SeriesInfo, list_series, load_scan
from lunglib.qc import QCFinding
from lunglib.settings import Settings

__all__ = [
    "CTScan",
    "DicomLoadError",
    "QCFinding",
    "SeriesInfo",
    "Settings",
    "list_series",
    "load_scan",
]
__version__ = "0.1.0"
