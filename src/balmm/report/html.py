"""Self-contained HTML and PNG figures shared by profile, train and bench reports."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: batch jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> bytes:
    """Save ``fig`` as PNG at ``path`` and return the PNG bytes (for embedding); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI, so the page needs no other file."""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def table_html(df: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A pandas table as HTML with floats rounded."""
    return df.to_html(
        float_format=lambda v: float_format.format(v), na_rep="–", border=0, classes="tbl"
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}
table.tbl{border-collapse:collapse;font-size:.9em;margin:.6em 0}
table.tbl th,table.tbl td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.tbl th:first-child,table.tbl td:first-child{text-align:left}
img{max-width:100%;margin:.5em 0}.note{color:#555;font-size:.9em}
.verdict{background:#f5f8ff;border-left:4px solid #4a6fd1;padding:.6em 1em}
"""


def html_page(title: str, sections: Iterable[tuple[str, str]], subtitle: str = "") -> str:
    """A complete self-contained HTML page from (heading, inner HTML) sections."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p class='note'>{html.escape(subtitle)}</p>")
    for heading, inner in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{inner}")
    parts.append("</body></html>")
    return "\n".join(parts)
