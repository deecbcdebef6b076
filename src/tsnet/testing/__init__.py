"""Test support for tsnet and its third-party plugins (needs the ``test`` extra:
pytest and pytest-twisted).

`conformance` is the storage conformance suite every backend passes; `fixtures`
builds real service trees on free loopback ports and tears them down.
"""
