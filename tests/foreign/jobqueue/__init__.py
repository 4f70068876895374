"""A job-queue backend written the way another team would: its own socket manager.

Nothing here imports the toolkit except :mod:`.rules`; the app runs unchanged
with its plain :class:`~.app.JobSocketManager` or with the shim wrapped around it.
"""
