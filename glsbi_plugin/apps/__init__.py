"""Applications built on the library: the ``glsbi`` command line (:mod:`.cli`), the main job
(:mod:`.quickstart`, ``make run``) and the interactive demo (:mod:`.demo`, ``glsbi demo``).

Nothing in the library imports from here: data flows physics → simulator → store → inference →
diagnostics → applications.
"""
