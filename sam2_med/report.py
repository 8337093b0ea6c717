"""A short human-readable report of a segmentation: a table, and one picture per structure.

:func:`write_report` writes into a folder:

* ``report.html``: the image, the definitions in one line each, a table of every structure
  (volume, surface, RECIST long and short axis, intensity mean ± SD, centroid), and per structure
  its picture and the RECIST end points in RAS and LPS millimetres;
* ``<label>_<name>.png`` per structure: the RECIST slice (where its long axis is largest),
  cropped around the structure, in the radiological convention (axial and coronal: the
  patient's right on the left of the picture; sagittal: anterior on the left; anterior or
  superior up), square pixels, with the structure's outline (yellow), the long axis (red) and
  the short axis (cyan);
* ``measurements.csv`` and ``measurements.json`` (see :mod:`sam2_med.measure`).

Drawing uses Pillow (a scikit-image dependency); no matplotlib, no GUI.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .labels import LabelVolume
from .measure import (
    DEFINITIONS,
    StructureMeasurements,
    measure,
    measurement_rows,
    measurements_json,
)

__all__ = ["REPORT_NAME", "render_structure_png", "write_report"]

#: The report's file name inside the folder.
REPORT_NAME = "report.html"
#: Longest side of a structure picture, in pixels.
PICTURE_SIZE = 384

# (screen x direction, screen y direction) in RAS, per world axis normal to the slice
_SCREEN = {
    2: (np.array([-1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])),  # axial: x -> L, y -> P
    1: (np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # coronal: x -> L, y -> I
    0: (np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # sagittal: x -> P, y -> I
}
_EDGE_LETTERS = {
    2: ("R", "L", "A", "P"),
    1: ("R", "L", "S", "I"),
    0: ("A", "P", "S", "I"),
}


def _file_stem(m: StructureMeasurements) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", m.name).strip("._") or "structure"
    return f"{m.label:03d}_{safe[:40]}"


class _View:
    """Maps in-plane voxel coordinates ``(u, v)`` of one slice to picture pixels."""

    def __init__(self, affine: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray) -> None:
        self.u, self.v = (a for a in range(3) if a != axis)
        cols = np.asarray(affine, dtype=np.float64)[:3, :3]
        normal_world = int(np.argmax(np.abs(np.cross(cols[:, self.u], cols[:, self.v]))))
        self.letters = _EDGE_LETTERS[normal_world]
        sx, sy = _SCREEN[normal_world]
        du, dv = cols[:, self.u], cols[:, self.v]
        # which in-plane voxel axis runs along the screen's x (the other along y), and signs
        self.u_is_x = abs(du @ sx) + abs(dv @ sy) >= abs(dv @ sx) + abs(du @ sy)
        x_dir, y_dir = (du, dv) if self.u_is_x else (dv, du)
        self.flip_x = float(x_dir @ sx) < 0
        self.flip_y = float(y_dir @ sy) < 0
        self.lo, self.hi = lo, hi  # inclusive crop, (u, v) indices
        spacing = np.linalg.norm(cols, axis=0)
        px = spacing[self.u] if self.u_is_x else spacing[self.v]
        py = spacing[self.v] if self.u_is_x else spacing[self.u]
        n = hi - lo + 1
        nx, ny = (n[0], n[1]) if self.u_is_x else (n[1], n[0])
        width_mm, height_mm = nx * px, ny * py
        scale = PICTURE_SIZE / max(width_mm, height_mm)  # picture pixels per mm
        self.size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
        self.fx, self.fy = self.size[0] / nx, self.size[1] / ny  # picture px per voxel

    def layout(self, plane: np.ndarray) -> np.ndarray:
        """A cropped ``(U, V)`` slice array as screen rows x columns."""
        crop = plane[self.lo[0] : self.hi[0] + 1, self.lo[1] : self.hi[1] + 1]
        img = crop.T if self.u_is_x else crop  # rows = y
        if self.flip_x:
            img = img[:, ::-1]
        if self.flip_y:
            img = img[::-1, :]
        return img

    def points(self, uv: np.ndarray) -> list[tuple[float, float]]:
        """``(N, 2)`` slice coordinates -> picture pixel coordinates ``(x, y)``."""
        rel = np.asarray(uv, dtype=np.float64) - self.lo
        x, y = (rel[:, 0], rel[:, 1]) if self.u_is_x else (rel[:, 1], rel[:, 0])
        n = self.hi - self.lo + 1
        nx, ny = (n[0], n[1]) if self.u_is_x else (n[1], n[0])
        if self.flip_x:
            x = (nx - 1) - x
        if self.flip_y:
            y = (ny - 1) - y
        return list(
            zip(((x + 0.5) * self.fx).tolist(), ((y + 0.5) * self.fy).tolist(), strict=True)
        )


def render_structure_png(
    labels: LabelVolume, m: StructureMeasurements, *, window: Any = "auto"
) -> bytes:
    """The picture of one structure on its RECIST slice, as PNG bytes.

    Parameters
    ----------
    labels : LabelVolume
        The label map and (``labels.reference``) its image.
    m : StructureMeasurements
        With ``m.recist`` computed (it gives the slice and the lines).
    window : str or (center, width)
        Display window, as :func:`sam2_med.intensity.resolve_intensity` takes it (``"auto"``:
        CT soft tissue, else the 0.5-99.5 percentiles).

    Returns
    -------
    bytes
        An RGB PNG, at most :data:`PICTURE_SIZE` pixels on its longer side plus a caption.
    """
    from PIL import Image, ImageDraw

    from .intensity import resolve_intensity
    from .measure import slice_contours

    if m.recist is None:
        raise ValueError("the picture needs the RECIST measurement (measure(..., recist=True))")
    r = m.recist
    vol = labels.reference
    axis, k = r.axis_index, r.slice_index
    mask = np.take(np.asarray(labels.array), k, axis=axis) == m.label
    image = np.take(np.asarray(vol.array), k, axis=axis).astype(np.float64)
    u_idx, v_idx = np.nonzero(mask)
    lo = np.array([u_idx.min(), v_idx.min()])
    hi = np.array([u_idx.max(), v_idx.max()])
    margin = np.maximum(8, (hi - lo + 1) // 2)
    lo = np.maximum(lo - margin, 0)
    hi = np.minimum(hi + margin, np.array(mask.shape) - 1)
    view = _View(vol.affine, axis, lo, hi)

    limits = resolve_intensity(vol, window).limits
    lo_v, hi_v = float(limits[0]), float(limits[1])
    grey = np.clip((view.layout(image) - lo_v) / max(hi_v - lo_v, 1e-9), 0.0, 1.0)
    grey = np.nan_to_num(grey, nan=0.0)
    pic = Image.fromarray((grey * 255).astype(np.uint8), mode="L").resize(
        view.size, Image.Resampling.BILINEAR
    )
    pic = pic.convert("RGB")
    draw = ImageDraw.Draw(pic)
    uv_axes = [a for a in range(3) if a != axis]
    for poly in slice_contours(mask):
        draw.line(view.points(poly), fill=(255, 220, 0), width=2, joint="curve")
    for pts, colour in ((r.long_ijk, (255, 40, 40)), (r.short_ijk, (0, 230, 255))):
        ends = view.points(np.asarray(pts)[:, uv_axes])
        draw.line(ends, fill=colour, width=3)
        for x, y in ends:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), outline=colour, width=2)
    font = _font(13)
    left, right, top, bottom = view.letters
    w, h = pic.size
    draw.text((4, h / 2), left, fill=(255, 255, 255), font=font, anchor="lm")
    draw.text((w - 4, h / 2), right, fill=(255, 255, 255), font=font, anchor="rm")
    draw.text((w / 2, 4), top, fill=(255, 255, 255), font=font, anchor="mt")
    draw.text((w / 2, h - 4), bottom, fill=(255, 255, 255), font=font, anchor="mb")

    caption = (
        f"{m.name}: long {r.long_mm:.1f} mm (red), short {r.short_mm:.1f} mm (cyan); "
        f"{r.plane} slice {k}"
    )
    out = Image.new("RGB", (w, h + 22), (20, 20, 20))
    out.paste(pic, (0, 0))
    ImageDraw.Draw(out).text((4, h + 4), caption, fill=(235, 235, 235), font=_font(12))
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def write_report(
    labels: LabelVolume,
    out_dir: str | os.PathLike[str],
    *,
    measurements: Sequence[StructureMeasurements] | None = None,
    plane: str = "axial",
    window: Any = "auto",
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``report.html``, a PNG per structure and the measurement tables into ``out_dir``.

    Parameters
    ----------
    labels : LabelVolume
        The label map and its image (``labels.reference``).
    out_dir : path-like
        Folder to write into (created if missing; other files in it are left alone).
    measurements : sequence of StructureMeasurements, optional
        Already computed (with RECIST); default: :func:`sam2_med.measure.measure` of every
        present label on ``plane``.
    plane : {"axial", "coronal", "sagittal"}
        RECIST plane when measuring here.
    window : str or (center, width)
        Display window of the pictures.
    title : str, optional
        Heading; default: the image's description or file name.
    overwrite : bool
        Replace existing report files. Default: refuse if any exists.

    Returns
    -------
    Path
        The ``report.html`` written.

    Raises
    ------
    MeasurementError
        An empty label map (nothing to report).
    OutputExistsError
        A report file exists and ``overwrite`` is false.
    """
    from .io._atomic import check_writable, write_files_atomically
    from .io.errors import MaskWriteError

    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise MaskWriteError("the report folder is a file", folder)
    ms = list(measurements) if measurements is not None else measure(labels, plane=plane)
    pictures = {f"{_file_stem(m)}.png": m for m in ms if m.recist is not None}
    names = [REPORT_NAME, "measurements.csv", "measurements.json", *pictures]
    folder.mkdir(parents=True, exist_ok=True)
    check_writable([folder / n for n in names], overwrite=overwrite)

    files: dict[Path, bytes] = {}
    for name, m in pictures.items():
        files[folder / name] = render_structure_png(labels, m, window=window)
    vol = labels.reference
    doc = measurements_json(ms, image=vol, plane=ms[0].recist.plane if ms[0].recist else plane)
    files[folder / "measurements.json"] = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    from .measure import _csv_text

    files[folder / "measurements.csv"] = _csv_text(measurement_rows(ms)).encode("utf-8")
    files[folder / REPORT_NAME] = _html(labels, ms, pictures, title).encode("utf-8")
    write_files_atomically(files, overwrite=overwrite)
    return folder / REPORT_NAME


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _xyz(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{c:.1f}" for c in np.asarray(p)) + ")"


def _html(
    labels: LabelVolume,
    ms: Sequence[StructureMeasurements],
    pictures: dict[str, StructureMeasurements],
    title: str | None,
) -> str:
    from . import __version__

    vol = labels.reference
    prov = vol.provenance
    source = prov.paths[0] if len(prov.paths) == 1 else (prov.description or "")
    if prov.format == "dicom" and prov.paths:
        source = str(Path(prov.paths[0]).parent)
    heading = title or prov.description or (Path(source).name if source else "segmentation")
    e = html.escape
    rows = []
    for m in ms:
        r, st = m.recist, m.intensity
        inten = "–"
        if st is not None and st.count:
            inten = f"{st.mean:.1f} ± {_fmt(st.sd)}" + (f" {st.units}" if st.units else "")
        rows.append(
            "<tr>"
            f"<td>{m.label}</td><td>{e(m.name)}</td><td>{m.volume_ml:.2f}</td>"
            f"<td>{_fmt(m.surface_mm2, 0)}</td>"
            f"<td>{_fmt(r.long_mm if r else None)}</td><td>{_fmt(r.short_mm if r else None)}</td>"
            f"<td>{r.slice_index if r else '–'}</td><td>{e(inten)}</td>"
            f"<td>{_xyz(m.centroid_ras)}</td></tr>"
        )
    sections = []
    for name, m in pictures.items():
        r = m.recist
        assert r is not None
        sections.append(
            f"<section><h3>{m.label} · {e(m.name)}</h3>"
            f'<img src="{e(name)}" alt="{e(m.name)} on {r.plane} slice {r.slice_index}">'
            "<table class=pts><tr><th></th><th>end 1 RAS mm</th><th>end 2 RAS mm</th>"
            "<th>end 1 LPS mm</th><th>end 2 LPS mm</th></tr>"
            f"<tr><td>long {r.long_mm:.1f} mm</td><td>{_xyz(r.long_ras[0])}</td>"
            f"<td>{_xyz(r.long_ras[1])}</td><td>{_xyz(r.long_lps[0])}</td>"
            f"<td>{_xyz(r.long_lps[1])}</td></tr>"
            f"<tr><td>short {r.short_mm:.1f} mm</td><td>{_xyz(r.short_ras[0])}</td>"
            f"<td>{_xyz(r.short_ras[1])}</td><td>{_xyz(r.short_lps[0])}</td>"
            f"<td>{_xyz(r.short_lps[1])}</td></tr></table></section>"
        )
    defs = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in DEFINITIONS.items())
    spacing = " × ".join(f"{s:.3g}" for s in vol.spacing)
    created = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(heading)} – sam2-med report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
section {{ display: inline-block; vertical-align: top; margin: 0 1.5em 1.5em 0; }}
img {{ display: block; border: 1px solid #444; }}
.pts td, .pts th {{ font-size: 0.8em; }}
.note {{ color: #555; font-size: 0.85em; }}
</style></head><body>
<h1>{e(heading)}</h1>
<p>Image: {e(str(source))} ({e(vol.modality)}, {" × ".join(map(str, vol.shape))} voxels,
{spacing} mm, orientation {e(vol.orientation)}). Report by sam2-med {e(__version__)},
{e(created)}.</p>
<h2>Structures</h2>
<table><tr><th>label</th><th>name</th><th>volume mL</th><th>surface mm²</th>
<th>long axis mm</th><th>short axis mm</th><th>slice</th><th>mean ± SD</th>
<th>centroid RAS mm</th></tr>
{"".join(rows)}
</table>
<h2>RECIST slices</h2>
{"".join(sections)}
<h2>Definitions</h2>
<ul class=note>{defs}</ul>
<p class=note>Measurements are computed from the label map; a clinician reviews the
segmentation before any clinical use.</p>
</body></html>
"""
