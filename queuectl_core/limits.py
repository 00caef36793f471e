"""Limits and defaults shared by the records, the job spec and the settings.

Dependency-free (it imports nothing), so every other module may import it.
"""

from __future__ import annotations

MAX_ID_LENGTH = 255
MAX_COMMAND_LENGTH = 1_000_000
MAX_PRIORITY = 1_000_000_000
MAX_RETRIES_LIMIT = 10_000
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600.0
MAX_QUEUE_NAME_LENGTH = 64
MAX_ENV_ENTRIES = 1000
MAX_ENV_BYTES = 128 * 1024
MAX_PATH_LENGTH = 4096
DEFAULT_QUEUE = "default"
#: Longest retry delay ever scheduled (about 10 years), so that huge
#: exponents cannot overflow a timestamp.
MAX_DELAY_SECONDS = 315_360_000.0
#: Epoch milliseconds accepted for times: 1970 .. year 9999.
MAX_EPOCH_MS = 253_402_300_799_999
#: Smallest non-zero ``output_max_bytes``: half of it is one rotation step.
MIN_OUTPUT_CAP = 4096
#: Keys of a job's ``retry`` object: per-job overrides of the retry settings.
RETRY_KEYS = ("policy", "backoff_base", "max_delay", "jitter")

#: What a configuration without a YAML file (or without the key) uses.
DEFAULT_BACKEND = "sqlite"
DEFAULT_EXECUTOR = "shell"
DEFAULT_POLICY = "exponential"
DEFAULT_DLQ_TIMEOUT = 30.0
