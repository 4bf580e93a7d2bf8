"""The launching process's side of a run: its checks, its signals and the stages it drives.

``espnet3.launch`` (the command line) parses the options and hands them here. A single run
(:mod:`.run`) and a sweep (:mod:`espnet3.sweep.runner`) share one sequence of preparation
(:mod:`.pipeline`); the checks that build the model and its Lightning module before Ray starts
live in :mod:`.model_checks`.
"""
