"""Doctest collection over the packages (pyproject's ``--doctest-modules``).

Every module of ``thurrock_streams`` and ``sensors_sim`` is imported to find its doctests,
except those that act when imported: ``__main__`` runs the command line, and
``thurrock_streams/app.py`` builds the Faust app from the environment.
"""

collect_ignore = [
    "thurrock_streams/__main__.py",
    "thurrock_streams/app.py",
    "sensors_sim/__main__.py",
]
