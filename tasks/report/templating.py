"""The Jinja2 environment of both reports: templates/ and static/ beside this file, shipped as package data.

Conventions the templates rely on:
- Autoescaping is on, and values are escaped as `html.escape` does (`&quot;`, `&#x27;`), the bytes the report
  has always had; markupsafe's own escape writes `&#34;` and `&#39;`. `finalize` does this for every
  `{{ value }}`, and the `e`, `escape` and `join` filters follow it. Numbers and text are formatted in the
  Python that gathers a section's data (the same f-strings, so the same text and the same errors), the
  figures' coordinates by `{{ x|fmt(".1f") }}` (Python's format); the templates lay them out.
- `trim_blocks` and `lstrip_blocks`: a line holding only a block tag leaves nothing in the output, a
  `{%-` / `-%}` joins a line to the one before / after, and a line that ends in a block tag keeps its line
  break only with `+%}`. Otherwise an .html.j2 template's lines are the page's lines (a section template's
  last line break is dropped: render's `section` puts the body on lines of its own).
- A `*.svg.j2` template renders one line: its line breaks and the indentation after them are layout only,
  removed when it loads (OneLine), so break lines between elements or next to a Jinja tag, never where the
  output needs a space.
- Static files (CSS, JavaScript) are inlined as they are, less their final line break.
"""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_eval_context, select_autoescape
from jinja2.ext import Extension
from markupsafe import Markup

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def escape(value) -> Markup:
    """html.escape as Markup (markup passes unchanged)."""
    return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))


@pass_eval_context
def _finalize(ctx, value):
    return escape(value) if ctx.autoescape else value


def _join(items, sep: str = "") -> Markup:
    return escape(sep).join(escape(x) for x in items)


def _fmt(value, spec: str) -> str:
    """`{{ x|fmt(".1f") }}` is f"{x:.1f}"."""
    return format(value, spec)


class OneLine(Extension):
    """*.svg.j2: drop each line break and the indentation after it, outside Jinja tags."""

    TAGS = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.S)

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if not (name or "").endswith(".svg.j2"):
            return source
        parts = self.TAGS.split(source)
        parts[::2] = [re.sub(r"\n[ \t]*", "", text) for text in parts[::2]]
        return "".join(parts)


@cache
def environment() -> Environment:
    from .lineage import frag, script_json

    env = Environment(loader=FileSystemLoader(TEMPLATES, encoding="utf-8"),
                      autoescape=select_autoescape(["html.j2", "svg.j2"], default_for_string=True, default=True),
                      trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined, finalize=_finalize,
                      extensions=[OneLine])
    env.filters.update(e=escape, escape=escape, join=_join, fmt=_fmt, frag=frag, script_json=script_json)
    return env


def render(name: str, **context) -> Markup:
    return Markup(environment().get_template(name).render(**context))


def macro(template: str, name: str):
    """A macro of a template, callable from Python (returns Markup)."""
    return getattr(environment().get_template(template).module, name)


@cache
def static(name: str) -> Markup:
    """A static file's text to inline into the page (checked: it cannot end its <style> or <script> element)."""
    text = (STATIC / name).read_text(encoding="utf-8").removesuffix("\n")
    if re.search(r"</(style|script)", text, re.I):
        raise ValueError(f"static/{name} holds a closing </style or </script: it cannot be inlined")
    return Markup(text)
