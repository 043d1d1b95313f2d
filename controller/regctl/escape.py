"""Render hostile strings as data: the one escaping module every renderer uses.

Every string regctl prints that came from the registry, a run directory, a plan file,
a manifest or a policy (model and run names, descriptions, tags, run ids, paths, the
target URI, error messages quoting any of them) goes through one of these functions,
in the format it goes into. regctl's own markup (colour, `**bold**`, table syntax) is
added around the escaped value, never inside it.

Text (`text`), for terminals, logs and CI output:
    One line, every character that is not printable as itself replaced by a visible
    escape: the C0 controls (`\\n`, `\\r`, `\\t`, `\\x1b`, ...), DEL and the C1 controls
    (`\\x7f`, `\\x9b`, ...), Unicode format characters, which include the bidi controls
    that reorder what a reviewer reads (`\\u202e`, `\\u2066`, `\\u200f`, `\\u061c`, also
    zero-width characters and `\\ufeff`), line and paragraph separators (`\\u2028`,
    `\\u2029`) and lone surrogates (which would crash the UTF-8 writer). That is every
    character of Unicode category Cc, Cf, Cs, Zl or Zp. Backslashes are not doubled:
    the output is for people, not a reversible encoding, and `text(text(s)) == text(s)`,
    so a value escaped upstream (policy messages) is not mangled by a second pass. No
    escape sequence, OSC title or extra line can reach a terminal from a value; the
    only raw escapes regctl writes are its own colour codes, added after escaping.

Markdown (`md_code`, `md_cell`), for pull-request comments on GitHub:
    A value becomes an inline code span. Inside a code span CommonMark interprets
    nothing: no emphasis, link, image, autolink, HTML or entity; and GitHub's
    post-processing filters (`@user` mentions, `#12` issue references, bare URL
    autolinks, emoji shortcodes) skip `code` elements. Escaping every markdown
    punctuation character with backslashes would stop CommonMark but not those
    filters, which run on the rendered text. The value is first escaped with `text`,
    so it stays on one line (a newline would end a table row or start a block); the
    fence is one backtick longer than the longest backtick run inside, and padded with
    a space when the value starts or ends with a backtick or a space (CommonMark strips
    one space from each side). An empty value has no code span (two backticks are
    literal text), so it renders as `""`, outside code: a value `""` is shown in code.
    In a table cell (`md_cell`) `|` becomes `\\|` even inside the code span: GFM splits
    the row into cells before it parses code, and turns `\\|` back into `|` inside.

JSON (`json_text`): `json.dumps(..., ensure_ascii=False)` already escapes the C0
    controls; `json_text` escapes the rest of the set above as `\\uXXXX` (surrogate
    pairs beyond the BMP), so JSON printed on a terminal is as inert as text and stays
    the same JSON value.

Mermaid (`mermaid`), for the text of a chart in a ```mermaid block (xychart-beta titles,
    axis names and category labels, each inside `"..."`): escaped with `text` (one
    line), shortened to `limit` characters, then each character that means something to
    mermaid or to the SVG it draws becomes a mermaid entity code `#<decimal>;`, which
    mermaid turns back into the character in the drawing (`#34;` is drawn as `"`). Those
    are `"` (ends the string), `%` (`%%` comments, `%%{init}%%` directives, which mermaid
    finds anywhere in the text), `#` and `;` (a value's own `#lt;` is shown as written,
    never decoded), `:` (mermaid rewrites a line with `style`, `:`, `#` and `;`), the
    backtick (`` "` `` opens a markdown string), `<`, `>` and `&` (HTML; `-->` too),
    `{`, `}` and `$` (directives, math), and the characters of mermaid's own entity
    placeholders (`\\ufb02`, `\\xb0`, `\\xb6`, `\\xdf`). Other printable characters, non-ASCII
    letters included, stay as they are: mermaid sizes the chart by the text it reads, so
    an entity code takes the room of seven characters.

GitHub workflow commands (`annotation`, `annotation_property`): the message and the
    properties of `::error file=...,title=...::message`, escaped with `text` (one
    line: a value cannot start a workflow command of its own) and then as the Actions
    toolkit does (`%`, `\\r`, `\\n`; properties also `:` and `,`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BACKTICKS: Final = re.compile(r"`+")


def _escapes(ch: str) -> bool:
    return unicodedata.category(ch) in _ESCAPED_CATEGORIES


def _visible(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def text(value: str) -> str:
    """`value` on one line with every control, format and separator character escaped."""
    if value.isprintable():  # fast path: no character of the escaped categories
        return value
    return "".join(_visible(ch) if _escapes(ch) else ch for ch in value)


def md_code(value: str) -> str:
    """`value` as a GitHub-safe inline code span (`""` when empty)."""
    body = text(value)
    if not body:
        return '""'
    longest = max((len(m) for m in _BACKTICKS.findall(body)), default=0)
    fence = "`" * (longest + 1)
    if body.strip(" ") and (body[0] in "` " or body[-1] in "` "):
        body = f" {body} "
    return f"{fence}{body}{fence}"


def md_cell(value: str) -> str:
    """`md_code(value)` for a table cell: pipes escaped so the row keeps its cells."""
    return md_code(value).replace("|", "\\|")


_MERMAID_ENCODED: Final = frozenset('"%#;:`<>&{}$\ufb02\xb0\xb6\xdf')


def mermaid(value: str, limit: int = 60) -> str:
    """`value` for the inside of a double-quoted mermaid string: one line, at most `limit`
    characters as drawn (longer values end in `...`), entity codes where mermaid would
    read a character as syntax."""
    body = text(value)
    if len(body) > limit:
        body = body[: max(0, limit - 3)] + "..."
    return "".join(f"#{ord(ch)};" if ch in _MERMAID_ENCODED else ch for ch in body)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(document: str) -> str:
    """A document from `json.dumps` with the characters `text` escapes as `\\u` escapes.

    Only for JSON text: such characters occur there only inside strings, where a `\\u`
    escape means the same character. The C0 controls are left alone (json.dumps has
    escaped those inside strings; outside them they are its own newlines).
    """
    if document.isprintable():
        return document
    return "".join(_json_escape(ch) if ord(ch) >= 0x20 and _escapes(ch) else ch for ch in document)


def annotation(value: str) -> str:
    """The message of a GitHub workflow command (`::error ...::message`)."""
    return text(value).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotation_property(value: str) -> str:
    """A property value of a GitHub workflow command (`file=`, `title=`)."""
    return annotation(value).replace(":", "%3A").replace(",", "%2C")
