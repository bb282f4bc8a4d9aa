"""The errors a user's mistake raises, one leaf module that every layer may import.

Each is a `ValueError` whose message names the key, file or field and what was expected;
`mtljax.main` turns any of them into one `error:` line and exit status 2.
"""


class ConfigError(ValueError):
  """A config that cannot run; the message lists every problem with its key."""


class DataError(ValueError):
  """A dataset on disk does not match what the reader expects (missing/odd file, bad label)."""
