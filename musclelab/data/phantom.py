"""Moved to :mod:`musclelab.phantoms.l3` (the built-in phantoms live in ``musclelab.phantoms``). This old name is
an alias of that module: ``import musclelab.data.phantom`` gives the same module object, so imports, private
helpers and monkeypatching all keep working."""
import sys

from musclelab.phantoms import l3 as _module

sys.modules[__name__] = _module
