"""Stand-ins for outside services these machines cannot reach, for tests and local trials.

Each follows the real service's published contract closely enough that a client written against
it also works against the real thing; docs/fakes.md lists what each emulates and where it
deviates.
"""
