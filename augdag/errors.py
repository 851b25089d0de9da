"""Errors a user can act on. Each message names the file, key or sample and what is allowed."""


class AugdagError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ParamsError(AugdagError):
    """A params.yaml key is unknown, missing, or its value is out of range."""


class DataError(AugdagError):
    """An input file or folder cannot be used (missing, corrupt, not an image, empty class...)."""


class ExpectationFailed(AugdagError):
    """A Great Expectations suite in `fail` mode did not pass."""


class ModelError(AugdagError):
    """A model or weight file cannot be loaded safely or does not fit."""


class LineageError(AugdagError):
    """A sample id is unknown, or replaying it did not reproduce its content hash."""


class StorageError(AugdagError):
    """An output could not be written (disk full, no permission); the previous output is kept."""


class RunLocked(AugdagError):
    """Another augdag command is running on the same project (they share params.yaml and data/)."""
