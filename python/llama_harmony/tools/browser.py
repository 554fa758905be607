"""gpt-oss's built-in ``browser`` tool (``browser.search``, ``browser.open``, ``browser.find``)
over a pluggable search backend, with an offline backend for a local folder of documents.

    from llama_harmony.tools.browser import BrowserSession, LocalFolderBackend

    backend = LocalFolderBackend("docs/")          # indexes .txt .md .html .htm (SQLite FTS5)
    session = BrowserSession(backend)              # one per conversation
    session.call("search", '{"query": "rate limits"}')     # the browser tool message's text
    session.call("open", '{"id": 0}')
    session.call("find", '{"pattern": "429"}')
    state = session.to_dict()                      # JSON-able: store it with the response
    session = BrowserSession.from_dict(backend, state)

**What the model sees** follows the conventions its tool description
(``ToolNamespaceConfig.browser()``) and the public gpt-oss reference use: every display starts
with ``[{cursor}] {title} ({url})`` and ``**viewing lines [{first} - {last}] of {last line}**``,
then the page's lines numbered ``L{n}: `` from 0 (text wrapped at 80 columns), so the model can
cite ``【{cursor}†L{a}-L{b}】``. Links are shown as ``【{id}†{text}】`` (same site) or
``【{id}†{text}†{domain}】`` and opened with ``open(id=...)``; search results are such links
with a snippet, and opening one shows the page around the match. ``find`` lists the matches
(case-insensitive) as links that open the page at them. Each display gets a new cursor
(a stack of pages per conversation); ``open()`` without ``id`` scrolls the page at
``cursor``; ``open(id="<url>")`` opens a URL directly; ``view_source`` shows the raw file.
Errors (a bad cursor, link id, argument...) come back as a text message starting with
``Error:``, never as an exception. The Harmony answer message is authored ``browser.search``
(``.open``, ``.find``), to ``assistant`` (:func:`harmony_message`), and
:meth:`BrowserCall.web_search_call` gives the Responses API item.

**Local backend.** :class:`LocalFolderBackend` indexes a folder at construction with SQLite's
FTS5 (Python's ``sqlite3``; Porter stemming, BM25 ranking with titles weighted up): exact
phrase matches rank first, then pages with all the words, then any word. Pages are served from
the index, never read again from disk, so the served set is exactly what was indexed: files
under the folder with a known extension, at most ``max_file_bytes`` each, not hidden, and,
when a file is a symlink, only if it resolves inside the folder (symlinked directories are not
followed). URLs are ``local://{name}/{relative/path}`` (``name`` defaults to the folder's name),
never the server's absolute paths. Anything else (``file://``, ``../``, web URLs) is refused
with a clear message: the backend is offline.

**Writing a web backend.** Subclass :class:`BrowserBackend` and implement ``search(query,
topn) -> list[SearchHit]`` (title, URL, snippet; ``line`` when you know where in the page the
match is) and ``fetch(url) -> Page`` (turn HTML into text with :func:`html_to_page`, which also
numbers the links; a ``view-source:`` prefix asks for the raw source). Raise
:class:`BackendError` with a message meant for the model (it is shown to it as is) for any
failure: a missing page, a timeout, an HTTP error. Keep API keys out of the messages, bound
what you download (size, time), decide which hosts may be fetched (no private addresses:
``fetch`` receives URLs chosen by the model, so a web backend is an SSRF vector), and make the
methods thread-safe (one backend serves every conversation). No web backend ships here: they
need keys and network, which the tests cannot have.
"""

from __future__ import annotations

import abc
import json
import os
import posixpath
import re
import sqlite3
import textwrap
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote, unquote, urlsplit

from .. import Author, Message, Role, SystemContent, ToolNamespaceConfig

__all__ = [
    "BackendError",
    "BrowserBackend",
    "BrowserCall",
    "BrowserSession",
    "LocalFolderBackend",
    "Page",
    "SearchHit",
    "harmony_message",
    "html_to_page",
    "system_content",
]

VIEW_SOURCE = "view-source:"
_WRAP = 80
_LINK = re.compile(r"【\d+†([^†】]*)(?:†[^†】]*)?】")


class BackendError(Exception):
    """A backend failure whose message is shown to the model as is."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: the page's ``url`` and ``title``, a short ``snippet`` around the
    match, and ``line``: the line of the page (as :func:`wrap_lines` numbers it) where the
    match is, when known (``open`` then shows the page from a little above it)."""

    url: str
    title: str
    snippet: str
    line: Optional[int] = None


@dataclass
class Page:
    """A page as the browser shows it: ``text`` with its links already written as
    ``【{id}†{text}】`` / ``【{id}†{text}†{domain}】``, ``links`` mapping those ids (strings) to
    URLs. ``kind`` is ``"page"`` for fetched pages, ``"search"`` / ``"find"`` for the result
    lists the browser builds, whose links carry the line to open at (``link_lines``)."""

    url: str
    title: str
    text: str
    links: Dict[str, str] = field(default_factory=dict)
    kind: str = "page"
    link_lines: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """The page as JSON-able data."""
        return {"url": self.url, "title": self.title, "text": self.text, "links": dict(self.links),
                "kind": self.kind, "link_lines": dict(self.link_lines)}

    @classmethod
    def from_dict(cls, raw: Any) -> "Page":
        """A page from :meth:`to_dict`'s data."""
        if not isinstance(raw, dict):
            raise ValueError("page: must be an object")
        for key in ("url", "title", "text"):
            if not isinstance(raw.get(key), str):
                raise ValueError(f"page.{key}: must be a string")
        links, lines = raw.get("links", {}), raw.get("link_lines", {})
        if not (isinstance(links, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in links.items())):
            raise ValueError("page.links: must map strings to strings")
        if not (isinstance(lines, dict) and all(isinstance(k, str) and type(v) is int
                                                for k, v in lines.items())):
            raise ValueError("page.link_lines: must map strings to ints")
        if raw.get("kind", "page") not in ("page", "search", "find"):
            raise ValueError("page.kind: must be page, search or find")
        return cls(url=raw["url"], title=raw["title"], text=raw["text"], links=dict(links),
                   kind=raw.get("kind", "page"), link_lines=dict(lines))


class BrowserBackend(abc.ABC):
    """Where the browser searches and fetches pages. Implementations must be thread-safe and
    raise :class:`BackendError` (message for the model) on failure."""

    @abc.abstractmethod
    def search(self, query: str, topn: int) -> List[SearchHit]:
        """At most ``topn`` results for ``query``, best first."""

    @abc.abstractmethod
    def fetch(self, url: str) -> Page:
        """The page at ``url`` (a ``view-source:`` prefix: its raw source as text)."""


# -- text utilities --------------------------------------------------------------------------

def wrap_lines(text: str, width: int = _WRAP) -> List[str]:
    """The lines the browser shows and numbers: ``text``'s lines, each wrapped at ``width``
    columns (empty lines kept)."""
    out: List[str] = []
    for line in text.split("\n"):
        out.extend(textwrap.wrap(line, width=width, replace_whitespace=False,
                                 drop_whitespace=False, break_on_hyphens=False) or [""])
    return out


def _clean(text: str) -> str:
    """Page text may not forge link markup: the brackets become look-alikes."""
    return text.replace("【", "〖").replace("】", "〗")


def _link_text(text: str) -> str:
    return " ".join(_clean(text).replace("†", "‡").split())


def _domain(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:
        return ""


class _Links:
    """Numbers a page's links in order of appearance (one id per distinct URL)."""

    def __init__(self, page_url: str):
        self.domain = _domain(page_url)
        self.ids: Dict[str, str] = {}

    def markup(self, url: str, text: str) -> str:
        text = _link_text(text) or url
        link_id = self.ids.setdefault(url, str(len(self.ids)))
        domain = _domain(url)
        if domain and domain != self.domain:
            return f"【{link_id}†{text}†{domain}】"
        return f"【{link_id}†{text}】"

    def table(self) -> Dict[str, str]:
        return {i: u for u, i in self.ids.items()}


_BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "ul",
          "ol", "table", "tr", "blockquote", "pre", "form", "figure", "dl", "dt", "dd", "hr",
          "address", "details", "summary", "fieldset"}
_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas"}


class _HTMLText(HTMLParser):
    """HTML to the browser's text: headings as ``#``, list items as ``*``, paragraphs apart,
    links numbered, images as ``[Image: alt]``, scripts and styles dropped."""

    def __init__(self, resolve: Callable[[str], Optional[str]], links: _Links):
        super().__init__(convert_charrefs=True)
        self.resolve = resolve
        self.links = links
        self.parts: List[str] = []
        self.title = ""
        self.skip = 0
        self.in_title = False
        self.pre = 0
        self.anchor: Optional[Tuple[Optional[str], List[str]]] = None

    def _emit(self, text: str) -> None:
        if self.anchor is not None:
            self.anchor[1].append(text)
        else:
            self.parts.append(text)

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _SKIP:
            self.skip += 1
        if self.skip:
            return
        a = dict(attrs)
        if tag == "a":
            self._close_anchor()
            href = a.get("href")
            self.anchor = (self.resolve(href) if href else None, [])
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._emit("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self._emit("\n* ")
        elif tag == "br":
            self._emit("\n")
        elif tag in ("td", "th"):
            self._emit(" ")
        elif tag == "img":
            alt = a.get("alt") or a.get("title")
            self._emit(f" [Image: {_link_text(alt)}] " if alt else " [Image] ")
        elif tag in _BLOCK:
            self._emit("\n\n" if tag != "tr" else "\n")
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "a":
            self._close_anchor()
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") or tag in _BLOCK:
            self._emit("\n\n" if tag != "tr" else "\n")
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def _close_anchor(self) -> None:
        if self.anchor is not None:
            url, text = self.anchor
            self.anchor = None
            joined = "".join(text)
            self._emit(self.links.markup(url, joined) if url else joined)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        if self.skip:
            return
        self._emit(_clean(data) if self.pre else re.sub(r"\s+", " ", _clean(data)))

    def text(self) -> str:
        self._close_anchor()
        lines = [line.rstrip() for line in "".join(self.parts).split("\n")]
        lines = [line.lstrip() if not self.pre else line for line in lines]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _resolver(page_url: str) -> Callable[[str], Optional[str]]:
    """Resolves hrefs against ``page_url``, ``local://`` URLs included (``urljoin`` does not
    know that scheme). In-page anchors, ``javascript:`` and ``mailto:`` give ``None``."""
    base = urlsplit(page_url)

    def resolve(href: str) -> Optional[str]:
        href = href.strip()
        if not href or href.startswith("#"):
            return None
        try:
            parts = urlsplit(href)
        except ValueError:
            return None
        if parts.scheme:
            return href if parts.scheme in ("http", "https", "local") else None
        if href.startswith("//"):
            return f"{base.scheme or 'https'}:{href}"
        path = parts.path if parts.path.startswith("/") else posixpath.join(
            posixpath.dirname(base.path) or "/", parts.path)
        path = posixpath.normpath(path) if parts.path else base.path
        query = f"?{parts.query}" if parts.query else ""
        return f"{base.scheme}://{base.netloc}{path}{query}"

    return resolve


def html_to_page(source: str, url: str, title: Optional[str] = None) -> Page:
    """An HTML document as a :class:`Page`: text (standard library ``html.parser``), links
    numbered (relative ones resolved against ``url``), the ``<title>`` unless ``title`` is
    given (else the URL)."""
    links = _Links(url)
    parser = _HTMLText(_resolver(url), links)
    parser.feed(source)
    parser.close()
    text = parser.text()
    name = title or " ".join(parser.title.split()) or url
    return Page(url=url, title=_clean(name), text=text, links=links.table())


_MD_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_to_page(source: str, url: str, fallback_title: str) -> Page:
    """Markdown as a :class:`Page`: the text as written, its ``[text](target)`` links numbered,
    images as ``[Image: alt]``, the first heading as title (else ``fallback_title``)."""
    links = _Links(url)
    resolve = _resolver(url)

    def link(m: "re.Match[str]") -> str:
        if m.group(1):
            return f"[Image: {_link_text(m.group(2))}]" if m.group(2).strip() else "[Image]"
        target = resolve(m.group(3))
        return links.markup(target, m.group(2)) if target else m.group(2)

    text = _MD_LINK.sub(link, _clean(source))
    heading = _MD_HEADING.search(source)
    title = heading.group(1) if heading else fallback_title
    return Page(url=url, title=_clean(title), text=text.strip("\n"), links=links.table())


# -- the local backend -----------------------------------------------------------------------

_KINDS = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html",
          ".htm": "html"}


class LocalFolderBackend(BrowserBackend):
    """Searches a local folder of ``.txt``, ``.md``/``.markdown`` and ``.html``/``.htm`` files,
    offline, with SQLite FTS5 (see the module docstring for what is indexed and served).

    ``name``: the site name in the URLs (``local://{name}/...``; default: the folder's name).
    ``max_file_bytes``: larger files are skipped (listed in :attr:`skipped`);
    ``max_total_bytes`` / ``max_files``: indexing stops there (the rest is skipped too).
    ``progress(done, total)``: called while indexing (every 100 files and at the end).
    Raises :class:`BackendError` when FTS5 is missing from this Python's SQLite or the folder
    does not exist.
    """

    def __init__(self, folder: Union[str, "os.PathLike[str]"], *, name: Optional[str] = None,
                 max_file_bytes: int = 2 << 20, max_total_bytes: int = 256 << 20,
                 max_files: int = 100_000, progress: Optional[Callable[[int, int], None]] = None):
        """Set up the LocalFolderBackend (the parameters are described in the class docstring)."""
        root = os.path.realpath(os.fspath(folder))
        if not os.path.isdir(root):
            raise BackendError(f"not a folder: {folder}")
        self.root = root
        self.name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(root)) or "local"
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            raise BackendError(f"name: letters, digits, '.', '_' and '-' only (got {self.name!r})")
        self.max_file_bytes = max_file_bytes
        self.skipped: List[Tuple[str, str]] = []   # (relative path, why)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self._db.execute("CREATE VIRTUAL TABLE docs USING fts5(title, body, "
                             "tokenize='porter unicode61 remove_diacritics 2')")
        except sqlite3.OperationalError as exc:
            raise BackendError(f"SQLite FTS5 is not available in this Python ({sqlite3.sqlite_version}: "
                               f"{exc}); use a Python whose sqlite3 has FTS5 (CPython's builds do)") from exc
        self._db.execute("CREATE TABLE pages (id INTEGER PRIMARY KEY, path TEXT UNIQUE, url TEXT, "
                         "title TEXT, text TEXT, links TEXT, source TEXT)")
        self.count = self._index(max_total_bytes, max_files, progress)

    # indexing

    def _candidates(self) -> List[str]:
        found = []
        for top, dirs, files in os.walk(self.root):  # symlinked directories are not followed
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in _KINDS:
                    found.append(os.path.relpath(os.path.join(top, f), self.root))
        return found

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([real, self.root]) == self.root and os.path.isfile(real)

    def _index(self, max_total: int, max_files: int,
               progress: Optional[Callable[[int, int], None]]) -> int:
        paths = self._candidates()
        total_bytes = indexed = 0
        for n, rel in enumerate(paths, 1):
            full = os.path.join(self.root, rel)
            why = None
            if not self._inside(full):
                why = "outside the folder"
            else:
                size = os.path.getsize(full)
                if size > self.max_file_bytes:
                    why = f"over max_file_bytes ({size} bytes)"
                elif total_bytes + size > max_total or indexed >= max_files:
                    why = "over max_total_bytes or max_files"
            if why is None:
                try:
                    with open(full, "rb") as f:
                        data = f.read(self.max_file_bytes + 1)
                except OSError as exc:
                    why = f"unreadable ({exc.strerror})"
            if why is not None:
                self.skipped.append((rel, why))
            else:
                total_bytes += len(data)
                indexed += 1
                self._add(rel, data.decode("utf-8", "replace"))
            if progress is not None and (n % 100 == 0 or n == len(paths)):
                progress(n, len(paths))
        self._db.commit()
        return indexed

    def _add(self, rel: str, source: str) -> None:
        source = source.replace("\r\n", "\n").replace("\r", "\n")
        posix = rel.replace(os.sep, "/")
        url = f"local://{self.name}/{quote(posix)}"
        kind = _KINDS[os.path.splitext(rel)[1].lower()]
        fallback = os.path.basename(rel)
        if kind == "html":
            page = html_to_page(source, url)
            if page.title == url:
                page.title = fallback
        elif kind == "markdown":
            page = markdown_to_page(source, url, fallback)
        else:
            page = Page(url=url, title=fallback, text=_clean(source).strip("\n"))
        cur = self._db.execute("INSERT INTO pages (path, url, title, text, links, source) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               (posix, url, page.title, page.text, json.dumps(page.links), source))
        self._db.execute("INSERT INTO docs (rowid, title, body) VALUES (?, ?, ?)",
                         (cur.lastrowid, page.title, _LINK.sub(r"\1", page.text)))

    # serving

    def search(self, query: str, topn: int) -> List[SearchHit]:
        """The indexed pages matching ``query``, best first (at most ``topn``)."""
        words = re.findall(r"\w+", query.lower())[:32]
        if not words:
            return []
        quoted = [f'"{w}"' for w in words]
        tiers = ([f'"{" ".join(words)}"'] if len(words) > 1 else []) + [" ".join(quoted), " OR ".join(quoted)]
        rows: List[Tuple[int, str, str, str]] = []
        seen = set()
        with self._lock:
            for match in tiers:  # exact phrase first, then all words, then any word
                for row in self._db.execute(
                        "SELECT docs.rowid, pages.url, pages.title, "
                        "snippet(docs, 1, '', '', ' … ', 24) FROM docs JOIN pages ON pages.id = docs.rowid "
                        "WHERE docs MATCH ? ORDER BY bm25(docs, 10.0, 1.0) LIMIT ?", (match, topn)):
                    if row[0] not in seen and len(rows) < topn:
                        seen.add(row[0])
                        rows.append(row)
            texts = {r[0]: self._db.execute("SELECT text FROM pages WHERE id = ?", (r[0],)).fetchone()[0]
                     for r in rows}
        return [SearchHit(url=url, title=title, snippet=" ".join(snippet.split()),
                          line=_first_line(texts[rowid], words))
                for rowid, url, title, snippet in rows]

    def fetch(self, url: str) -> Page:
        """The indexed page at ``url`` (a ``local://`` URL); :class:`BackendError` otherwise."""
        raw = url
        view_source = url.startswith(VIEW_SOURCE)
        if view_source:
            url = url[len(VIEW_SOURCE):]
        path = self._path_of(url)
        with self._lock:
            row = self._db.execute("SELECT url, title, text, links, source FROM pages WHERE path = ?",
                                   (path,)).fetchone()
        if row is None:
            raise BackendError(f"`{raw}` was not found in the local collection.")
        page_url, title, text, links, source = row
        if view_source:
            return Page(url=VIEW_SOURCE + page_url, title=f"{VIEW_SOURCE}{title}",
                        text=_clean(source).strip("\n"))
        return Page(url=page_url, title=title, text=text, links=json.loads(links))

    def _path_of(self, url: str) -> str:
        prefix = f"local://{self.name}/"
        if not url.startswith(prefix):
            raise BackendError(
                f"`{url}` is not available: this browser is offline and serves only the local "
                f"collection ({prefix}...). Search it with browser.search.")
        path = unquote(urlsplit(url[len(prefix) - 1:]).path).lstrip("/")
        parts = path.split("/")
        if "\x00" in path or any(p in ("", ".", "..") for p in parts):
            raise BackendError(f"`{url}` is not a valid page address.")
        return path


def _first_line(text: str, words: Sequence[str]) -> Optional[int]:
    """The first wrapped line holding the whole phrase, else the first holding any word."""
    lines = [_LINK.sub(r"\1", line).lower() for line in wrap_lines(text)]
    phrase = " ".join(words)
    for needle_set in ([phrase], list(words)):
        for i, line in enumerate(lines):
            if any(n in line for n in needle_set):
                return i
    return None


# -- the session -----------------------------------------------------------------------------

class _ToolError(Exception):
    """A usage error shown to the model."""


@dataclass(frozen=True)
class BrowserCall:
    """One browser call's outcome: ``text`` for the tool message, ``ok`` (False: ``text`` is
    an error), ``function`` (``search`` / ``open`` / ``find``) and ``action``: the Responses
    API ``web_search_call`` action (``{"type": "search", "query"}``, ``{"type": "open_page",
    "url"}`` or ``{"type": "find", "url", "pattern"}``)."""

    text: str
    ok: bool
    function: str
    action: Dict[str, Any]

    def web_search_call(self, item_id: str) -> Dict[str, Any]:
        """The Responses API ``web_search_call`` output item."""
        return {"type": "web_search_call", "id": item_id,
                "status": "completed" if self.ok else "failed", "action": dict(self.action)}


_ARGS = {
    "search": {"query": "string", "topn": "number", "top_n": "number", "source": "string"},
    "open": {"id": "number or string", "cursor": "number", "loc": "number", "num_lines": "number",
             "view_source": "boolean", "source": "string"},
    "find": {"pattern": "string", "cursor": "number"},
}


class BrowserSession:
    """One conversation's browsing: a stack of displayed pages (the cursors) over a backend.

    ``view_chars``: how much text a display shows when ``num_lines`` is not given (about a
    quarter as many tokens); ``max_lines``: the most lines one display shows;
    ``max_results``: the most search results; ``max_pages``: distinct pages kept in the state
    (older ones are dropped; their cursors then say so). Not thread-safe: one per
    conversation, used by one request at a time.
    """

    def __init__(self, backend: BrowserBackend, *, view_chars: int = 4000, max_lines: int = 200,
                 max_results: int = 20, max_pages: int = 32):
        """Set up the BrowserSession (the parameters are described in the class docstring)."""
        self.backend = backend
        self.view_chars = view_chars
        self.max_lines = max_lines
        self.max_results = max_results
        self.max_pages = max_pages
        self.pages: Dict[str, Page] = {}   # by key: the URL, or "search:N" / "find:N"
        self.stack: List[str] = []         # cursor -> page key
        self._serial = 0
        self._lines: Dict[str, List[str]] = {}
        self._last_ok = True                 # how the latest call went (for run())
        self._last_url: Optional[str] = None

    # state

    def to_dict(self) -> Dict[str, Any]:
        """The state as JSON-able data (pages, cursors)."""
        return {"version": 1, "stack": list(self.stack), "serial": self._serial,
                "pages": {k: p.to_dict() for k, p in self.pages.items()}}

    @classmethod
    def from_dict(cls, backend: BrowserBackend, state: Any, **options: Any) -> "BrowserSession":
        """A session restored from :meth:`to_dict`'s data; ``ValueError`` names what is wrong."""
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError("browser state: must be an object with version 1")
        stack, pages, serial = state.get("stack"), state.get("pages"), state.get("serial", 0)
        if not (isinstance(stack, list) and all(isinstance(k, str) for k in stack)):
            raise ValueError("browser state.stack: must be a list of strings")
        if not isinstance(pages, dict):
            raise ValueError("browser state.pages: must be an object")
        if type(serial) is not int:
            raise ValueError("browser state.serial: must be an int")
        session = cls(backend, **options)
        session.pages = {str(k): Page.from_dict(v) for k, v in pages.items()}
        session.stack = list(stack)
        session._serial = serial
        return session

    # the three functions

    def search(self, query: str, topn: int = 10, source: Optional[str] = None) -> str:
        """``browser.search``: the results page (a new cursor), or an error text."""
        return self._guard("search", lambda: self._search(query, topn))

    def open(self, id: Union[int, str] = -1, cursor: int = -1, loc: int = -1, num_lines: int = -1,
             view_source: bool = False, source: Optional[str] = None) -> str:
        """``browser.open``: follow link ``id`` of the page at ``cursor`` (default: the last),
        open a URL (``id`` a string), or scroll (no ``id``); from line ``loc``, ``num_lines``
        lines. The display (a new cursor), or an error text."""
        return self._guard("open", lambda: self._open(id, cursor, loc, num_lines, view_source))

    def find(self, pattern: str, cursor: int = -1) -> str:
        """``browser.find``: the matches of ``pattern`` in the page at ``cursor`` (a new
        cursor), or an error text."""
        return self._guard("find", lambda: self._find(pattern, cursor))

    def call(self, function_name: str, arguments_json: str) -> str:
        """Run the model's call (``search`` / ``open`` / ``find``, with or without the
        ``browser.`` prefix; its JSON arguments): the tool message's text. Never raises."""
        return self.run(function_name, arguments_json).text

    def run(self, function_name: str, arguments_json: str) -> BrowserCall:
        """:meth:`call` with the outcome's details (:class:`BrowserCall`)."""
        self._last_ok, self._last_url = True, None
        name = function_name[len("browser."):] if isinstance(function_name, str) and \
            function_name.startswith("browser.") else function_name
        if name not in _ARGS:
            return BrowserCall(f"Error: unknown browser function `{function_name}`; use search, "
                               "open or find.", False, str(function_name), {"type": "search", "query": ""})
        try:
            args = self._arguments(name, arguments_json)
        except _ToolError as exc:
            return BrowserCall(f"Error: {exc}", False, name, self._action(name, {}))
        if name == "search":
            text = self.search(args["query"], args.get("topn", args.get("top_n", 10)))
        elif name == "open":
            text = self.open(**{k: v for k, v in args.items() if k != "source"})
        else:
            text = self.find(**args)
        return BrowserCall(text, self._last_ok, name, self._action(name, args))

    # internals

    def _action(self, name: str, args: Dict[str, Any]) -> Dict[str, Any]:
        url = self._last_url
        if name == "search":
            return {"type": "search", "query": args.get("query", "")}
        if name == "open":
            return {"type": "open_page", "url": url}
        return {"type": "find", "url": url, "pattern": args.get("pattern", "")}

    def _arguments(self, name: str, arguments_json: str) -> Dict[str, Any]:
        if not isinstance(arguments_json, str):
            raise _ToolError(f"browser.{name}: the arguments must be a JSON object")
        try:
            args = json.loads(arguments_json) if arguments_json.strip() else {}
        except ValueError as exc:
            raise _ToolError(f"browser.{name}: the arguments are not valid JSON ({exc})") from None
        if not isinstance(args, dict):
            raise _ToolError(f"browser.{name}: the arguments must be a JSON object")
        allowed = _ARGS[name]
        for key, value in args.items():
            if key not in allowed:
                raise _ToolError(f"browser.{name}: unknown argument `{key}` (allowed: "
                                 f"{', '.join(k for k in allowed if k != 'top_n')})")
            kind = allowed[key]
            if value is None and key == "source":
                continue
            ok = (isinstance(value, str) if kind == "string" else
                  isinstance(value, bool) if kind == "boolean" else
                  _integral(value) or (kind == "number or string" and isinstance(value, str)))
            if not ok:
                raise _ToolError(f"browser.{name}: `{key}` must be {'an integer' if kind == 'number' else 'a ' + kind}"
                                 f" (got {json.dumps(value)[:40]})")
            if kind != "string" and kind != "boolean" and not isinstance(value, str):
                args[key] = int(value)
        required = {"search": "query", "find": "pattern"}.get(name)
        if required and required not in args:
            raise _ToolError(f"browser.{name}: `{required}` is required")
        return args

    def _guard(self, name: str, fn: Callable[[], str]) -> str:
        try:
            return fn()
        except (_ToolError, BackendError) as exc:
            self._last_ok = False
            return f"Error: {exc}"

    def _key(self, cursor: int) -> str:
        if not self.stack:
            raise _ToolError("no page is open yet: search first.")
        if cursor == -1:
            cursor = len(self.stack) - 1
        if not 0 <= cursor < len(self.stack):
            raise _ToolError(f"cursor `{cursor}` is out of range; the cursors are 0 to {len(self.stack) - 1}.")
        key = self.stack[cursor]
        if key not in self.pages:
            raise _ToolError(f"the page of cursor `{cursor}` is no longer kept; open it again.")
        return key

    def _push(self, key: str, page: Page) -> int:
        if key not in self.pages and len(self.pages) >= self.max_pages:
            # Drop the page displayed longest ago (by its latest cursor).
            latest = {k: i for i, k in enumerate(self.stack)}
            oldest = min(self.pages, key=lambda k: latest.get(k, -1))
            del self.pages[oldest]
            self._lines.pop(oldest, None)
        self.pages[key] = page
        self._lines.pop(key, None)
        self.stack.append(key)
        return len(self.stack) - 1

    def _lines_of(self, key: str) -> List[str]:
        if key not in self._lines:
            self._lines[key] = wrap_lines(self.pages[key].text)
        return self._lines[key]

    def _display(self, cursor: int, loc: int, num_lines: int) -> str:
        key = self.stack[cursor]
        page, lines = self.pages[key], self._lines_of(key)
        if loc >= len(lines):
            self.stack.pop()
            raise _ToolError(f"invalid location `{loc}`: the page's last line is {len(lines) - 1}.")
        if num_lines > 0:
            end = min(loc + num_lines, loc + self.max_lines, len(lines))
        else:
            end, budget = loc, self.view_chars
            while end < len(lines) and end - loc < self.max_lines:
                budget -= len(lines[end]) + len(str(end)) + 4
                if budget < 0 and end > loc:
                    break
                end += 1
        header = f"[{cursor}] {page.title}" + (f" ({page.url})" if page.url else "")
        body = "\n".join(f"L{i}: {lines[i]}" for i in range(loc, end))
        return f"{header}\n**viewing lines [{loc} - {end - 1}] of {len(lines) - 1}**\n\n{body}"

    def _search(self, query: str, topn: int) -> str:
        if not query.strip():
            raise _ToolError("browser.search: the query is empty.")
        hits = self.backend.search(query, max(1, min(topn, self.max_results)))
        links = _Links("")
        entries, lines = [], {}
        for hit in hits:
            link = links.markup(hit.url, hit.title)
            link_id = links.ids[hit.url]
            if hit.line is not None:
                lines[link_id] = hit.line
            entries.append(f"* {link} {_clean(' '.join(hit.snippet.split()))}".rstrip())
        text = "# Search Results\n\n" + ("\n".join(entries) if entries else f"No results for `{_clean(query)}`.")
        self._serial += 1
        page = Page(url="", title=_clean(query), text=text, links=links.table(), kind="search",
                    link_lines=lines)
        return self._display(self._push(f"search:{self._serial}", page), 0, -1)

    def _open(self, id: Union[int, str], cursor: int, loc: int, num_lines: int,
              view_source: bool) -> str:
        line: Optional[int] = None
        if isinstance(id, str) and id.strip().isdigit():
            id = int(id)  # a link id sent as a string
        if isinstance(id, str):
            url, fresh = id, True
        else:
            current = self.pages[self._key(cursor)]
            if id >= 0:
                if str(id) not in current.links:
                    raise _ToolError(f"invalid link id `{id}` on cursor {cursor if cursor >= 0 else len(self.stack) - 1}.")
                url, fresh = current.links[str(id)], False
                line = current.link_lines.get(str(id))
            elif view_source:
                url, fresh = current.url, False
            else:  # scroll the page at `cursor`
                self._last_url = current.url
                new = self._push(self._key(cursor), current)
                return self._display(new, max(loc, 0), num_lines)
        if view_source and not url.startswith(VIEW_SOURCE):
            url = VIEW_SOURCE + url
        self._last_url = url
        page = None if fresh else self.pages.get(url)
        if page is None:
            page = self.backend.fetch(url)
            url = page.url or url
        if loc < 0:  # a few lines of context above the match
            loc = max(line - 4, 0) if line is not None else 0
        return self._display(self._push(url, page), loc, num_lines)

    def _find(self, pattern: str, cursor: int) -> str:
        key = self._key(cursor)
        page = self.pages[key]
        self._last_url = page.url
        if page.kind != "page":
            raise _ToolError("find works on opened pages, not on search or find results.")
        if not pattern.strip():
            raise _ToolError("browser.find: the pattern is empty.")
        needle = pattern.lower()
        lines = [_LINK.sub(r"\1", line) for line in self._lines_of(key)]
        chunks: List[str] = []
        lines_at: Dict[str, int] = {}
        i = 0
        while i < len(lines) and len(chunks) < 50:
            if needle in lines[i].lower():
                n = str(len(chunks))
                lines_at[n] = i
                chunks.append(f"# 【{n}†match at L{i}】\n" + "\n".join(lines[i:i + 4]))
                i += 4
            else:
                i += 1
        text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{_clean(pattern)}`"
        self._serial += 1
        result = Page(url=f"{page.url}/find?pattern={quote(pattern)}",
                      title=f"Find results for text: `{_clean(pattern)}` in `{page.title}`",
                      text=text, links={n: page.url for n in lines_at}, kind="find",
                      link_lines=lines_at)
        return self._display(self._push(f"find:{self._serial}", result), 0, -1)


def _integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def system_content() -> SystemContent:
    """The system message content declaring the browser tool as the reference renders it
    (``SystemContent.new().with_tools(ToolNamespaceConfig.browser())``)."""
    return SystemContent.new().with_tools(ToolNamespaceConfig.browser())


def harmony_message(function_name: str, text: str, *, channel: str = "analysis") -> Message:
    """The browser's answer as a Harmony message: author ``browser.{function}`` (tool role),
    to ``assistant``, on ``channel`` (the call's channel)."""
    name = function_name if function_name.startswith("browser.") else f"browser.{function_name}"
    return (Message.from_author_and_content(Author.new(Role.TOOL, name), text)
            .with_recipient("assistant").with_channel(channel))
