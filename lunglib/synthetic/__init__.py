"""The embedded synthetic chest-CT cohort: phantoms with nodules, written as real DICOM.

Nothing is downloaded: :func:`ensure_cohort` writes the default cohort on first use. The modules,
in the order data flows through them (each imports only the ones before it):

``geometry``   :class:`Geometry` of a patient (:func:`sample_geometry`), tube rasterisation
``anatomy``    :func:`draw_anatomy`, :func:`grow_vessel_tree`, :func:`draw_bones`; ``TISSUES``
``nodules``    :class:`NoduleRanges` (the difficulty knob), :func:`place_nodules`
``scanner``    :func:`apply_scanner`: blur, noise, reconstruction circle
``phantom``    :class:`PatientSpec` -> :func:`make_patient` -> :class:`Phantom`
``writer``     :func:`write_dicom_series` with fake names, ids and seed-derived UIDs
``truth``      the ground-truth files: written per patient, read by :func:`load_ground_truth`
               and :func:`ground_truth_array` (also for :class:`lunglib.datasets.SyntheticDataset`)
``cohort``     :func:`write_cohort`, :func:`ensure_cohort`: the cohort folder, one writer at a time
"""

from lunglib.synthetic.anatomy import (
    TISSUES,
    Anatomy,
    draw_anatomy,
    draw_bones,
    grow_vessel_tree,
)
from lunglib.synthetic.cohort import (
    DEFAULT_N_PATIENTS,
    cohort_specs,
    ensure_cohort,
    generate_patient,
    patient_id,
    read_cohort_parameters,
    write_cohort,
)
from lunglib.synthetic.geometry import (
    DEFAULT_MATRIX,
    FULL_RESOLUTION_MATRIX,
    Geometry,
    sample_geometry,
)
from lunglib.synthetic.nodules import Nodule, NoduleRanges, place_nodules
from lunglib.synthetic.phantom import PatientSpec, Phantom, make_patient
from lunglib.synthetic.scanner import apply_scanner
from lunglib.synthetic.truth import (
    NODULE_COLUMNS,
    ground_truth_array,
    ground_truth_paths,
    load_ground_truth,
)
from lunglib.synthetic.writer import (
    MANUFACTURER,
    fake_patient_id,
    fake_patient_name,
    is_synthetic_scan,
    write_dicom_series,
)

__all__ = [
    "DEFAULT_MATRIX",
    "DEFAULT_N_PATIENTS",
    "FULL_RESOLUTION_MATRIX",
    "NODULE_COLUMNS",
    "TISSUES",
    "Anatomy",
    "Geometry",
    "Nodule",
    "NoduleRanges",
    "PatientSpec",
    "Phantom",
    "apply_scanner",
    "cohort_specs",
    "draw_anatomy",
    "draw_bones",
    "ensure_cohort",
    "fake_patient_id",
    "fake_patient_name",
    "generate_patient",
    "grow_vessel_tree",
    "ground_truth_array",
    "ground_truth_paths",
    "load_ground_truth",
    "make_patient",
    "patient_id",
    "place_nodules",
    "read_cohort_parameters",
    "sample_geometry",
    "write_cohort",
    "write_dicom_series",
    "MANUFACTURER",
    "is_synthetic_scan",
]
