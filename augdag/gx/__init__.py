"""Great Expectations (1.x): the dataset-level suites in expectations/ on whole manifests, and their Data Docs.

- ``suites``: read a suite, ``validate_frame`` (a ValidationReport), ``require`` (raise ExpectationFailed);
- ``modes``: a suite's expectations as named checks with a mode each (warn, fail, off), ``run_suite``, and
  which checks a chunk of rows can decide (``split_checks``);
- ``docs``: ``build_data_docs``, GE's static HTML site for saved validation results;
- ``context``: the one ephemeral GE context per process and the lock all GE work runs under;
- ``results``: Failure / ValidationReport from GE's structured results.

The per-sample decisions of the quality gate are not made here: they are vectorised code over the score
columns (augdag.checks). Importing this package does not import Great Expectations (that takes seconds).
"""

from augdag.gx.docs import build_data_docs
from augdag.gx.modes import (
    MODES,
    CheckSplit,
    SuiteResult,
    check_names,
    default_modes,
    fail_message,
    modes_for,
    run_suite,
    split_checks,
    validate_modes,
)
from augdag.gx.results import MAX_SAMPLE_IDS, Failure, ValidationReport
from augdag.gx.suites import load_suite, require, validate_frame

__all__ = ["MAX_SAMPLE_IDS", "MODES", "CheckSplit", "Failure", "SuiteResult", "ValidationReport", "build_data_docs",
    "check_names", "default_modes", "fail_message", "load_suite", "modes_for", "require", "run_suite",
    "split_checks", "validate_frame", "validate_modes"]
