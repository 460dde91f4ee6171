"""Moved to :mod:`musclelab.phantoms.abdomen` (the built-in phantoms live in ``musclelab.phantoms``). This old name
is an alias of that module: ``import musclelab.data.abdomen_phantom`` gives the same module object, so imports,
private helpers and monkeypatching all keep working."""
import sys

from musclelab.phantoms import abdomen as _module

sys.modules[__name__] = _module
