"""GDAL's C API as rasterio loads it, for oracles rasterio does not expose (``gdalwarp``'s own path)."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import rasterio


@functools.lru_cache(maxsize=1)
def libgdal() -> ctypes.CDLL:
    """The GDAL library rasterio itself runs on (found among this process's mapped files)."""
    import rasterio._base  # noqa: F401  (loads libgdal)

    maps = Path("/proc/self/maps").read_text().splitlines()
    paths = sorted({line.split()[-1] for line in maps if "libgdal" in line.split()[-1]})
    if not paths:
        raise RuntimeError("cannot find the GDAL library rasterio loaded (is this Linux?)")
    lib = ctypes.CDLL(paths[0])
    lib.GDALWarpAppOptionsNew.restype = ctypes.c_void_p
    lib.GDALWarpAppOptionsNew.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p]
    lib.GDALWarpAppOptionsFree.argtypes = [ctypes.c_void_p]
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.GDALWarp.restype = ctypes.c_void_p
    lib.GDALWarp.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.GDALVersionInfo.restype = ctypes.c_char_p
    lib.GDALVersionInfo.argtypes = [ctypes.c_char_p]
    return lib


def gdal_version() -> str:
    """The release of the GDAL library rasterio runs on."""
    return libgdal().GDALVersionInfo(b"RELEASE_NAME").decode()


def gdal_warp(src_path, dst_path, args: list[str]) -> None:
    """Run ``gdalwarp args src dst`` through ``GDALWarp()`` (the program's body) of rasterio's GDAL."""
    lib = libgdal()
    with rasterio.Env():
        argv = (ctypes.c_char_p * (len(args) + 1))(*[a.encode() for a in args], None)
        options = lib.GDALWarpAppOptionsNew(argv, None)
        if not options:
            raise RuntimeError(f"gdalwarp rejected the options {args}")
        source = lib.GDALOpen(str(src_path).encode(), 0)
        if not source:
            lib.GDALWarpAppOptionsFree(options)
            raise RuntimeError(f"GDAL cannot open {src_path}")
        error = ctypes.c_int(0)
        try:
            result = lib.GDALWarp(
                str(dst_path).encode(), None, 1, (ctypes.c_void_p * 1)(source), options, ctypes.byref(error)
            )
            if not result or error.value:
                raise RuntimeError(f"GDALWarp failed on {src_path} with {args} (usage error {error.value})")
            lib.GDALClose(result)
        finally:
            lib.GDALClose(source)
            lib.GDALWarpAppOptionsFree(options)
