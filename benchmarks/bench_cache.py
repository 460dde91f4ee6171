"""Slice cache vs decoding the source files every epoch (the issue asks for >= 20x).

Writes a small fake LiTS-like data set (gzip-compressed int16 NIfTI volumes with label volumes, CT-like noise so
gzip compresses them about as much as real CT) to a temp dir, builds the slice cache once, then times one epoch
that reads every slice (image and label):

(a) uncached, per volume: decode each volume pair with nibabel once per epoch (as an uncached loader does every
    epoch) and read its slices. This is the *best case* for an uncached loader, so it decides PASS/FAIL.
(a') uncached, per slice: slices in random order over the whole data set, each read with nibabel's
    ``dataobj[..., z]`` (what a shuffled slice dataset without a cache does; printed for context, 1 epoch).
(b) cached: the memory-mapped slice table, slices in random order over the whole data set.

"Reading" a slice touches every pixel with a cheap full reduction in the stored dtype (max of the image,
count_nonzero of the label), identical in (a), (a') and (b), so the timing measures data access rather than
arithmetic. A second line adds what a loader then does with every slice (convert the image to float32 HU and
sum it); that fixed per-pixel cost is the same in both paths and narrows the ratio. Files are in the OS page
cache (warm) in every case.

    python benchmarks/bench_cache.py [--volumes 8 --depth 40 --size 256 --epochs 3]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from musclelab.data.cache import SliceCache
from musclelab.data.case import Case
from musclelab.data.preprocess import SlicePreprocess

REQUIRED_RATIO = 20.0


@dataclass(frozen=True)
class Ref:
    case_id: str
    patient_id: str
    files: tuple[Path, ...]


class NiftiPairReader:
    """Minimal reader for ``volume-<i>.nii.gz`` / ``segmentation-<i>.nii.gz`` pairs (benchmark only)."""

    class_names = ("background", "muscle")

    def __init__(self, root: Path) -> None:
        self.root = root

    def scan(self) -> list[Ref]:
        refs = []
        for v in sorted(self.root.glob("volume-*.nii.gz")):
            i = v.name[len("volume-"):-len(".nii.gz")]
            refs.append(Ref(f"volume-{i}", f"patient-{i}", (v, self.root / f"segmentation-{i}.nii.gz")))
        return refs

    def load(self, ref: Ref) -> Case:
        img = nib.load(ref.files[0])
        image = np.asarray(img.get_fdata(dtype=np.float32)).transpose(2, 1, 0)  # (x, y, z) -> (z, row, col)
        label = np.asarray(nib.load(ref.files[1]).dataobj, dtype=np.uint8).transpose(2, 1, 0)
        zx, zy, zz = (float(s) for s in img.header.get_zooms()[:3])
        return Case(ref.case_id, ref.patient_id, np.ascontiguousarray(image), np.ascontiguousarray(label),
                    (zz, zy, zx), {}, ref.files)


def write_fake_nifti(root: Path, n: int, depth: int, size: int, seed: int = 0) -> None:
    """``n`` CT-like int16 volumes (noisy air clipped at -1024 HU, a noisy soft-tissue ellipse, a muscle ring)
    with label volumes, gzip-compressed like LiTS/MSD (``.nii.gz``)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    r = ((xx - size / 2) / (0.42 * size)) ** 2 + ((yy - size / 2) / (0.32 * size)) ** 2
    body, muscle = r < 1, (r > 0.55) & (r < 0.8)
    for i in range(n):
        vol = np.empty((depth, size, size), np.int16)
        lab = np.zeros((depth, size, size), np.uint8)
        for z in range(depth):
            sl = np.where(body, 40 + 15 * muscle + rng.normal(0, 20, (size, size)),
                          -1000 + rng.normal(0, 10, (size, size)))
            vol[z] = np.clip(np.rint(sl), -1024, 3071).astype(np.int16)
            lab[z][muscle] = 1
        affine = np.diag([0.7, 0.7, 2.5, 1.0])
        img = nib.Nifti1Image(vol.transpose(2, 1, 0), affine)  # NIfTI stores (x, y, z)
        img.header.set_data_dtype(np.int16)
        nib.save(img, root / f"volume-{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab.transpose(2, 1, 0), affine), root / f"segmentation-{i}.nii.gz")


def touch(image: np.ndarray, label: np.ndarray, to_float: bool) -> float:
    """Read every pixel of one slice: a cheap reduction, or (``to_float``) float32 HU conversion and a sum."""
    if to_float:
        return float(np.asarray(image, dtype=np.float32).sum()) + float(np.count_nonzero(label))
    return float(image.max()) + float(np.count_nonzero(label))


def epoch_uncached_volumes(refs: list[Ref], rng: np.random.Generator, to_float: bool) -> float:
    """Decode every volume pair once (random volume order) and read each of its slices (random order)."""
    total = 0.0
    for k in rng.permutation(len(refs)):
        img = np.asarray(nib.load(refs[k].files[0]).dataobj)  # int16, (x, y, z); slope 1 so HU as stored
        lab = np.asarray(nib.load(refs[k].files[1]).dataobj)
        for z in rng.permutation(img.shape[2]):
            total += touch(img[:, :, z], lab[:, :, z], to_float)
    return total


def epoch_uncached_slices(refs: list[Ref], depth: int, rng: np.random.Generator) -> float:
    """Every slice in random order over the data set, each read from its gzip file with ``dataobj[..., z]``."""
    total = 0.0
    for j in rng.permutation(len(refs) * depth):
        ref, z = refs[j // depth], int(j % depth)
        total += touch(nib.load(ref.files[0]).dataobj[:, :, z], nib.load(ref.files[1]).dataobj[:, :, z], False)
    return total


def epoch_cached(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, to_float: bool) -> float:
    """Read every slice of the memory-mapped cache, in random order over the whole data set."""
    total = 0.0
    for i in rng.permutation(len(images)):
        total += touch(images[i], labels[i], to_float)
    return total


def best_of(fn, epochs: int) -> float:
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=8)
    ap.add_argument("--depth", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3, 
                    help="epochs timed per method (best is reported; 5x as many for the fast cached epoch)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (printed)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        data, cache = tmp / "data", tmp / "cache"
        t0 = time.perf_counter()
        write_fake_nifti(data, args.volumes, args.depth, args.size)
        mb = sum(f.stat().st_size for f in data.iterdir()) / 2**20
        n_slices = args.volumes * args.depth
        print(f"data: {args.volumes} volumes of {args.depth}x{args.size}x{args.size} int16 + labels, "
              f"{mb:.1f} MB gzip NIfTI ({time.perf_counter() - t0:.1f} s to write)")
        reader = NiftiPairReader(data)

        t0 = time.perf_counter()
        ss = SliceCache.build_or_load(reader, SlicePreprocess(), cache, "bench")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ss = SliceCache.build_or_load(reader, SlicePreprocess(), cache, "bench")
        reopen_s = time.perf_counter() - t0
        assert len(ss) == n_slices
        print(f"cache: {len(ss)} slices, images {ss.images.dtype} {ss.images.shape}, {ss.meta.attrs['cache_dir']}")
        print(f"one-time build:            {build_s:8.3f} s")
        print(f"reopen (key + memmap):     {reopen_s:8.3f} s")

        refs = reader.scan()
        for to_float in (False, True):  # warm-up (page cache) and a checksum: both paths read the same pixels
            a = epoch_uncached_volumes(refs, np.random.default_rng(1), to_float)
            b = epoch_cached(ss.images, ss.labels, np.random.default_rng(1), to_float)
            if not np.isclose(a, b, rtol=1e-6):
                raise SystemExit(f"checksums differ: uncached {a} vs cached {b}")
        rng = np.random.default_rng(0)
        res = {}
        for to_float in (False, True):
            unc = best_of(lambda: epoch_uncached_volumes(refs, rng, to_float), args.epochs)
            cac = best_of(lambda: epoch_cached(ss.images, ss.labels, rng, to_float), 5 * args.epochs)  # ms: more reps
            res[to_float] = (unc, cac)
        per_slice = best_of(lambda: epoch_uncached_slices(refs, args.depth, rng), 1)

        unc, cac = res[False]
        ratio = unc / cac
        print(f"epoch (read every pixel), {n_slices} slices:")
        print(f"  (a)  decode each volume once:   {unc:8.3f} s  ({n_slices / unc:8.0f} slices/s)")
        print(f"  (a') decode per slice, shuffled:{per_slice:8.3f} s  ({n_slices / per_slice:8.0f} slices/s)"
              f"  -> cache {per_slice / cac:.0f}x faster")
        print(f"  (b)  memory-mapped cache:       {cac:8.3f} s  ({n_slices / cac:8.0f} slices/s)")
        uf, cf = res[True]
        print(f"  with float32 conversion + sum per slice: (a) {uf:.3f} s, (b) {cf:.3f} s -> {uf / cf:.1f}x")
        print(f"speed-up (b) vs (a): {ratio:.1f}x  -> {'PASS' if ratio >= REQUIRED_RATIO else 'FAIL'} "
              f"(required >= {REQUIRED_RATIO:.0f}x)")
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
