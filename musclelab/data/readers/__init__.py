"""Readers for real CT data sets, chosen by name (``data.name``): each lists cases cheaply (``scan``) and
decodes one into a :class:`~musclelab.data.case.Case` in the LPS convention (``load``).

Known readers: ``lits``, ``btcv``, ``chaos`` (CT), ``l3_folder`` (clinical single slices, phantom export),
``msd`` (Medical Segmentation Decathlon / nnU-Net raw). Check a data set with
:func:`musclelab.data.verify.verify_dataset` before training on it.
"""
from __future__ import annotations

from musclelab.data.readers.base import (
    READERS, CaseRef, Header, Problem, Reader, UnreadableFileError, build_reader, open_image, read_header,
    read_image, read_png, to_lps,
)
from musclelab.data.readers.btcv import BtcvReader
from musclelab.data.readers.chaos import ChaosReader
from musclelab.data.readers.l3_folder import L3FolderReader
from musclelab.data.readers.lits import LitsReader
from musclelab.data.readers.msd import MsdReader

__all__ = [
    "READERS", "CaseRef", "Header", "Problem", "Reader", "UnreadableFileError", "build_reader", "open_image",
    "read_header", "read_image", "read_png", "to_lps", "BtcvReader", "ChaosReader", "L3FolderReader",
    "LitsReader", "MsdReader",
]
