"""The one exception type plmkit raises for bad input.

Messages are a single line that names the file, key or value at fault, so a command-line user sees
`error: ...` and never a stack of internal frames (the CLI catches `PlmkitError`).
"""


class PlmkitError(ValueError):
    """Bad input to plmkit: a checkpoint, config, data file or argument that cannot be used as given."""
