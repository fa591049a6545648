"""The embedded synthetic chest-CT cohort: phantoms with nodules, written as real DICOM.

Nothing is downloaded: :func:`ensure_cohort` writes the default cohort on first use.
"""

from lunglib.synthetic.cohort import (
    DEFAULT_N_PATIENTS,
    NODULE_COLUMNS,
    PatientSpec,
    Phantom,
    cohort_specs,
    ensure_cohort,
    generate_patient,
    load_ground_truth,
    make_patient,
    patient_id,
    read_cohort_parameters,
    write_cohort,
    write_dicom_series,
)

__all__ = [
    "DEFAULT_N_PATIENTS",
    "NODULE_COLUMNS",
    "PatientSpec",
    "Phantom",
    "cohort_specs",
    "ensure_cohort",
    "generate_patient",
    "load_ground_truth",
    "make_patient",
    "patient_id",
    "read_cohort_parameters",
    "write_cohort",
    "write_dicom_series",
]
