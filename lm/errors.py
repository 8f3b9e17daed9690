"""Named errors. Each message says what is wrong and what to do about it."""


class LMError(Exception):
    """Base class: the CLI prints these as one `Error: ...` line."""


class CorpusError(LMError):
    """A corpus path is missing, empty, not text, or cannot be decoded."""


class TokenizerError(LMError):
    """A tokenizer cannot be trained or loaded with the given settings."""


class ConfigError(LMError):
    """A setting is out of range or contradicts another."""


class CheckpointError(LMError):
    """A checkpoint folder is missing, damaged or incompatible."""


class NoCheckpointError(CheckpointError):
    """No checkpoint was given and none exists under the default folder."""


class ExportError(LMError):
    """A checkpoint cannot be exported, or the export folder cannot be written."""


class TrainingDiverged(LMError):
    """The loss became NaN or infinite and rolling back did not help."""


class DistributedError(LMError):
    """A worker of a data-parallel run failed, or the workers cannot agree."""
