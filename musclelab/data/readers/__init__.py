"""Readers for real CT data sets, chosen by name (``data.name``): each lists cases cheaply (``scan``) and
decodes one into a :class:`~musclelab.data.case.Case` in the LPS convention (``load``).

One job per module: ``files`` (file types, listings), ``problems`` (findings and one-line file errors),
``decode`` (SimpleITK/PNG image decoding into LPS arrays), ``headers`` (geometry without pixels), ``label_maps``
(raw value -> class tables), ``base`` (the :class:`Reader` base class and ``READERS``), one module per data set.

Known readers: ``lits``, ``btcv``, ``chaos`` (CT), ``l3_folder`` (clinical single slices, phantom export),
``msd`` (Medical Segmentation Decathlon / nnU-Net raw). Check a data set with
:func:`musclelab.data.verify.verify_dataset` before training on it.
"""
from __future__ import annotations

from musclelab.data.readers.base import READERS, CaseRef, Reader, build_reader
from musclelab.data.readers.decode import open_image, read_image, read_png, to_lps
from musclelab.data.readers.headers import Header, read_header
from musclelab.data.readers.problems import Problem, UnreadableFileError, short_reason
from musclelab.data.readers.btcv import BtcvReader
from musclelab.data.readers.chaos import ChaosReader
from musclelab.data.readers.l3_folder import L3FolderReader
from musclelab.data.readers.lits import LitsReader
from musclelab.data.readers.msd import MsdReader

__all__ = [
    "READERS", "CaseRef", "Header", "Problem", "Reader", "UnreadableFileError", "build_reader", "open_image",
    "read_header", "read_image", "read_png", "short_reason", "to_lps", "BtcvReader", "ChaosReader", "L3FolderReader",
    "LitsReader", "MsdReader",
]
