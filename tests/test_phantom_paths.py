"""The phantoms moved into musclelab.phantoms; the old module paths are aliases of the new modules."""
from __future__ import annotations


def test_old_phantom_paths_are_the_new_modules(monkeypatch):
    import musclelab.data.abdomen_phantom as old_abdomen
    import musclelab.data.phantom as old_l3
    from musclelab.data.phantom import _Grid, generate_phantom  # noqa: F401  (private names too)
    from musclelab.phantoms import abdomen, l3

    assert old_l3 is l3 and old_abdomen is abdomen
    monkeypatch.setattr(old_l3, "SLICE_THICKNESS_MM", 5.0)
    assert l3.SLICE_THICKNESS_MM == 5.0
    # the abdomen phantom draws with the shared primitives
    from musclelab.phantoms import primitives

    assert abdomen._tube is primitives.tube and abdomen.Grid is primitives.Grid
    assert l3._unit_field is primitives.random_field
