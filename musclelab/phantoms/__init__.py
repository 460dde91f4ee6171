"""Built-in synthetic CT phantoms on one set of drawing primitives (:mod:`musclelab.phantoms.primitives`).

``thigh`` (hip-to-knee volumes, 30 classes, Kim 2024). The L3 (``musclelab.data.phantom``) and abdominal
(``musclelab.data.abdomen_phantom``) phantoms live under ``musclelab.data`` for now.
"""
