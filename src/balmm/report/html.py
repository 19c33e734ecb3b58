"""Self-contained HTML pages and PNG figures shared by the profile, train and bench reports."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path) -> bytes:
    """Save ``fig`` as PNG at ``path`` and return the PNG bytes (for embedding); a pyplot
    figure is closed."""
    buf = io.BytesIO()
    # no timestamp in the PNG: the same run writes the same bytes
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    if getattr(fig.canvas, "manager", None) is not None:  # made by pyplot
        import matplotlib.pyplot as plt

        plt.close(fig)
    data = buf.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def render(plot: Callable[..., Any], path: str | Path, *args: Any, **kwargs: Any) -> bytes:
    """Draw one ``balmm.pl`` plot on a detached figure and save it as PNG at ``path``."""
    from balmm.pl._common import detached_figures

    with detached_figures():
        ax = plot(*args, **kwargs)
    return save_figure(ax.figure, path)


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI, so the page needs no other file."""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def table_html(df: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A pandas table as HTML with floats rounded and one header row: a named index becomes
    the first column(s), pandas' unnamed 0..n-1 index is never shown."""
    named = any(n is not None for n in df.index.names)
    if named:
        df = df.reset_index()
    return df.to_html(
        float_format=lambda v: float_format.format(v),
        na_rep="–",
        border=0,
        classes="tbl",
        index=False,
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}
table.tbl{border-collapse:collapse;font-size:.9em;margin:.6em 0}
table.tbl th,table.tbl td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right;
vertical-align:top}
table.tbl th:first-child,table.tbl td:first-child{text-align:left}
table.tbl thead th{background:#f4f4f4}
img{max-width:100%;margin:.5em 0}.note{color:#555;font-size:.9em}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.figs img{max-width:min(100%,520px)}
.verdict{background:#f5f8ff;border-left:4px solid #4a6fd1;padding:.6em 1em}
"""


def plan_reasons(edges: Iterable[dict]) -> str:
    """The reason for each distillation edge's decision, as a list under the plan table
    (too long for a table cell)."""
    items = "".join(
        f"<li><b>{html.escape(str(e['teacher']))} &rarr; {html.escape(str(e['student']))}"
        f"</b>: {html.escape(str(e['reason']))}</li>"
        for e in edges
        if e.get("reason")
    )
    return f"<ul class='note'>{items}</ul>" if items else ""


def figures(*imgs: str) -> str:
    """Several <img> side by side (wrapping on narrow screens)."""
    return "<div class='figs'>" + "".join(imgs) + "</div>"


def html_page(title: str, sections: Iterable[tuple[str, str]], subtitle: str = "") -> str:
    """A complete self-contained HTML page from (heading, inner HTML) sections."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<link rel='icon' href='data:,'>",  # no favicon request (a console error)
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p class='note'>{html.escape(subtitle)}</p>")
    for heading, inner in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{inner}")
    parts.append("</body></html>")
    return "\n".join(parts)
