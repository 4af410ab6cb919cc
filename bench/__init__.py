"""Gentity's benchmark: ``python -m bench`` (or ``make bench``).

Five figures, each measured against a baseline taken in the same run on the same machine:
time to the first echoed command, keystroke round trip, terminal output throughput, log tail
cost, and the guest daemon's idle memory. See ``bench/__main__.py`` for the options.
"""
