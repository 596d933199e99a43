"""The one exception type bertkit raises for problems a user can fix.

Every entry point (the CLI, `from_pretrained`, the readers) turns bad input into a
`BertkitError` whose message is one sentence naming the file and the problem. The CLI
prints that sentence and exits non-zero; anything else is a bug and shows as one.
"""


class BertkitError(Exception):
    """A problem with the user's input (files, checkpoints, texts, arguments)."""
