"""Kernels with their references (issue 10): :mod:`dartok.ops.selective_scan`.

The function ``selective_scan`` is deliberately not re-exported here: it would shadow the
submodule of the same name as an attribute of this package.
"""
