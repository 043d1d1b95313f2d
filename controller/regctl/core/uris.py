"""Tracking and registry URIs, checked before anything is opened or sent.

A URI comes from the command line or the environment and is hostile input like any
other: a malformed one is an InputError naming where it came from
(`--tracking-uri: port 99999 is out of range 1-65535`), never a crash inside MLflow
or `urllib`. Messages never repeat the URI: it may carry a password (`user:pw@host`)
or a token in its query string; they name the part that is wrong.

Accepted: `http://HOST[:PORT][/PATH]` and `https://...`, `sqlite:///PATH` (relative
to the repository) or `sqlite:////ABSOLUTE/PATH`, the database URIs MLflow's
SQLAlchemy store takes (`postgresql`, `mysql`, `mssql`, each with an optional
`+driver`), and Databricks' (`databricks`, `databricks://PROFILE`, `databricks-uc`,
`uc`). MLflow's file store (a plain path or `file:`) is in maintenance mode and not
what regctl manages: it is refused with a hint.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse

from regctl.errors import InputError, Location, Problem

HTTP_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
DATABRICKS_SCHEMES = ("databricks", "databricks-uc", "uc")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HOST_RE = re.compile(r"^[\w.-]+$")  # names (IDN letters included) and IPv4
_MAX_LENGTH = 8192


def check_uri(uri: str, source: str) -> str:
    """`uri` unchanged when regctl can use it; else an InputError located at `source`
    (`--tracking-uri`, `MLFLOW_TRACKING_URI`, ...)."""
    why = uri_problem(uri)
    if why is not None:
        raise InputError([Problem(Location(source), "", why)])
    return uri


def uri_problem(uri: str) -> str | None:
    """Why `uri` is not a tracking or registry URI regctl can use, or None."""
    if not uri:
        return "empty (an unset variable?): give a URI, or leave the option out"
    if len(uri) > _MAX_LENGTH:
        return f"longer than {_MAX_LENGTH} characters"
    spaces_ok = uri.lower().startswith("sqlite:")  # a file path may hold spaces
    for ch in uri:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return f"contains a control or unassigned character (U+{ord(ch):04X})"
        if ch.isspace() and not (spaces_ok and ch == " "):
            return f"contains whitespace (U+{ord(ch):04X}); percent-encode it"
    if uri.lower() in DATABRICKS_SCHEMES:  # `databricks`: the default profile
        return None
    match = _SCHEME_RE.match(uri)
    if match is None:
        return (
            "not a URI (no scheme): give http(s)://HOST[:PORT] for a server or "
            "sqlite:///PATH for a local database"
        )
    scheme = match.group(1).lower()
    base = scheme.split("+", 1)[0]
    if scheme in HTTP_SCHEMES:
        return _http_problem(uri)
    if scheme == "sqlite":
        return _sqlite_problem(uri)
    if base in DATABASE_SCHEMES:
        if not uri[len(scheme) + 1 :].startswith("//"):
            return f"a {base} URI starts with {scheme}://"
        return _netloc_problem(uri, f"{base}:")
    if scheme in DATABRICKS_SCHEMES:
        return _netloc_problem(uri, f"{scheme}:")
    if scheme == "file" or len(scheme) == 1:  # `C:\...` is a path, as `file:` is
        return (
            "MLflow's file store is not supported: use sqlite:///PATH for a local "
            "database, or an http(s) server"
        )
    return (
        f"unsupported scheme {scheme!r}: use http://, https://, sqlite:///, "
        "postgresql://, mysql://, mssql:// or databricks"
    )


def _split(uri: str) -> urllib.parse.SplitResult | str:
    try:
        return urllib.parse.urlsplit(uri)
    except ValueError as exc:
        # urllib's messages may quote the netloc, which may hold a password
        if "IPv6" in str(exc) or "[" in uri:
            return "malformed IPv6 host (write it as [ADDRESS], brackets balanced)"
        return "malformed host part"


def _port_problem(netloc: str) -> str | None:
    """A port, when the host part gives one, must be digits in 1-65535."""
    hostport = netloc.rpartition("@")[2]
    rest = hostport.rpartition("]")[2] if hostport.startswith("[") else hostport
    if ":" not in rest:
        return None
    text = rest.rpartition(":")[2]
    if not text:
        return "empty port after ':'"
    if not (text.isascii() and text.isdigit()):
        return "the port is not a number"
    if len(text) > 5 or not 1 <= int(text) <= 65535:
        shown = text if len(text) <= 12 else text[:12] + "..."
        return f"port {shown} is out of range 1-65535"
    return None


def _netloc_problem(uri: str, what: str) -> str | None:
    """A host part, if any, that urllib can split, with a port in range."""
    parts = _split(uri)
    if isinstance(parts, str):
        return f"{what} {parts}"
    why = _port_problem(parts.netloc)
    return f"{what} {why}" if why else None


def _http_problem(uri: str) -> str | None:
    parts = _split(uri)
    if isinstance(parts, str):
        return parts
    scheme = parts.scheme.lower()
    if not uri[len(scheme) + 1 :].startswith("//"):
        return f"an {scheme} URI starts with {scheme}://HOST"
    host = parts.hostname
    if not host:
        return f"no host after {scheme}://"
    if ":" in host:  # an IPv6 literal: urllib checked the brackets
        if not re.fullmatch(r"[0-9A-Fa-f:.]+(%[\w.-]+)?", host):
            return "malformed IPv6 host"
    elif not _HOST_RE.fullmatch(host) or host.startswith(".") or ".." in host:
        return "malformed host name (letters, digits, '-' and '.' only)"
    why = _port_problem(parts.netloc)
    if why:
        return why
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        return "a server URI has no query string or fragment (MLflow appends its API path)"
    return None


def _sqlite_problem(uri: str) -> str | None:
    rest = uri[len("sqlite:") :]
    if not rest.startswith("///"):
        if rest.startswith("//") and rest[2:]:
            return (
                "a sqlite URI has no host: write sqlite:///RELATIVE/PATH or "
                "sqlite:////ABSOLUTE/PATH"
            )
        return "no database path: write sqlite:///PATH (relative to the repository)"
    path = rest[3:]
    if not path:
        return "no database path: write sqlite:///PATH (relative to the repository)"
    if "?" in path or "#" in path:
        return "a sqlite URI without query string or fragment: give only the database path"
    return None
