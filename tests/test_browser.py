"""The browser tool (llama_harmony.tools.browser) over the offline local-folder backend:
a folder of txt / md / html files written by each test, indexed by SQLite FTS5."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

import llama_harmony as lh
from llama_harmony.tools.browser import (
    BackendError, BrowserSession, LocalFolderBackend, harmony_message, system_content, wrap_lines,
)

LONG_LINES = 300


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "kb"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "limits.md").write_text(
        "# Rate limits\n\nRequests over the quota get HTTP 429 Too Many Requests.\n\n"
        "The leaky bucket refills every second. See [the FAQ](../faq.html) and "
        "[the API site](https://api.example.com/docs).\n")
    (docs / "faq.html").write_text(
        "<html><head><title>Frequently asked questions</title><style>.bucket{color:red}</style>"
        "<script>var hidden = 'zebra crossing';</script></head><body>"
        "<h1>FAQ</h1><p>Is the bucket leaky? Yes: a <b>leaky</b> bucket, refilled each second.</p>"
        "<p>Back to the <a href='guides/limits.md'>limits guide</a>.</p>"
        "<ul><li>first</li><li>forged 【9†evil】 link</li></ul><img src='d.png' alt='a diagram'>"
        "</body></html>")
    # Many pages mention the words; only one holds the phrase "quantum walrus migration".
    for i in range(5):
        (docs / f"noise{i}.txt").write_text("walrus " * 20 + "quantum " * 20 + "migration " * 20)
    (docs / "walrus.txt").write_text("Field notes.\nThe quantum walrus migration starts in May.\n")
    (docs / "long.txt").write_text("\n".join(f"line number {i} of the long file" for i in range(LONG_LINES)))
    return docs


@pytest.fixture
def session(folder):
    return BrowserSession(LocalFolderBackend(folder))


def header(text: str) -> str:
    return text.split("\n", 2)[0] + "\n" + text.split("\n", 2)[1]


def test_index_titles_and_conversion(folder):
    seen = []
    backend = LocalFolderBackend(folder, progress=lambda done, total: seen.append((done, total)))
    assert backend.count == 9 and backend.skipped == [] and seen == [(9, 9)]
    assert backend.name == "kb"
    faq = backend.fetch("local://kb/faq.html")
    assert faq.title == "Frequently asked questions"
    assert faq.text == ("# FAQ\n\nIs the bucket leaky? Yes: a leaky bucket, refilled each second.\n\n"
                        "Back to the 【0†limits guide】.\n\n* first\n* forged 〖9†evil〗 link\n\n[Image: a diagram]")
    assert faq.links == {"0": "local://kb/guides/limits.md"}
    guide = backend.fetch("local://kb/guides/limits.md")
    assert guide.title == "Rate limits"
    assert "See 【0†the FAQ】 and 【1†the API site†api.example.com】." in guide.text
    assert guide.links == {"0": "local://kb/faq.html", "1": "https://api.example.com/docs"}
    assert backend.fetch("local://kb/walrus.txt").title == "walrus.txt"
    assert backend.search("zebra crossing", 5) == []  # scripts are not text
    source = backend.fetch("view-source:local://kb/faq.html")
    assert "var hidden" in source.text and source.url == "view-source:local://kb/faq.html"


def test_search_ranks_the_phrase_first_and_opens_the_hit(session):
    text = session.call("search", json.dumps({"query": "quantum walrus migration"}))
    lines = text.split("\n")
    assert lines[0] == "[0] quantum walrus migration"
    assert re.fullmatch(r"\*\*viewing lines \[0 - \d+\] of \d+\*\*", lines[1])
    assert lines[3] == "L0: # Search Results"
    first = lines[5]
    assert first.startswith("L2: * 【0†walrus.txt†kb】 ") and "quantum walrus migration" in first
    assert sum("†kb】" in line for line in lines) == 6  # the phrase page, then the 5 noise pages
    opened = session.call("open", '{"id": "0"}')  # a link id sent as a string works too
    assert opened == ("[1] walrus.txt (local://kb/walrus.txt)\n**viewing lines [0 - 1] of 1**\n\n"
                      "L0: Field notes.\nL1: The quantum walrus migration starts in May.")


def test_search_result_opens_around_the_match(session):
    session.call("search", '{"query": "line number 250"}')
    text = session.call("open", '{"id": 0}')
    assert header(text).startswith("[1] long.txt (local://kb/long.txt)\n**viewing lines [246 - ")
    assert "\nL250: line number 250 of the long file" in text


def test_scrolling_with_loc_and_num_lines(session):
    session.call("open", '{"id": "local://kb/long.txt"}')
    text = session.call("open", '{"loc": 100, "num_lines": 3}')
    assert text == ("[1] long.txt (local://kb/long.txt)\n**viewing lines [100 - 102] of 299**\n\n"
                    "L100: line number 100 of the long file\nL101: line number 101 of the long file\n"
                    "L102: line number 102 of the long file")
    # Without num_lines the viewport is bounded by view_chars (4000): far fewer than 300 lines.
    first = session.call("open", '{"cursor": 0}')
    shown = re.search(r"viewing lines \[0 - (\d+)\] of 299", first)
    assert shown and 50 < int(shown.group(1)) < 200
    assert len(first) < 4000 + 200
    assert session.call("open", '{"loc": 299}').endswith("L299: line number 299 of the long file")
    assert session.call("open", '{"loc": 300}') == "Error: invalid location `300`: the page's last line is 299."
    assert len(session.stack) == 4  # the failed display took no cursor


def test_find_and_opening_a_match(session):
    session.call("open", '{"id": "local://kb/long.txt"}')
    text = session.call("find", '{"pattern": "NUMBER 27"}')
    assert header(text) == ("[1] Find results for text: `NUMBER 27` in `long.txt` "
                            "(local://kb/long.txt/find?pattern=NUMBER%2027)\n**viewing lines [0 - 22] of 22**")
    assert "L0: # 【0†match at L27】\nL1: line number 27 of the long file" in text
    # Matches within the 4 lines shown under a match are not listed again.
    assert re.findall(r"match at L(\d+)", text) == ["27", "270", "274", "278"]
    opened = session.call("open", '{"id": 1}')
    assert header(opened).startswith("[2] long.txt (local://kb/long.txt)\n**viewing lines [266 - ")
    assert session.call("find", '{"pattern": "no such words"}').endswith(
        "L0: No `find` results for pattern: `no such words`")
    session.call("search", '{"query": "bucket"}')
    assert session.call("find", '{"pattern": "bucket"}') == \
        "Error: find works on opened pages, not on search or find results."


def test_cursors_of_earlier_pages(session):
    session.call("search", '{"query": "leaky bucket"}')              # cursor 0
    faq = session.call("open", '{"id": "local://kb/faq.html"}')      # cursor 1
    session.call("open", '{"id": "local://kb/long.txt"}')            # cursor 2
    assert faq.startswith("[1] Frequently asked questions (local://kb/faq.html)")
    again = session.call("open", '{"cursor": 1, "loc": 0}')          # scroll the FAQ: cursor 3
    assert again.startswith("[3] Frequently asked questions") and again.split("\n", 1)[1] == faq.split("\n", 1)[1]
    guide = session.call("open", '{"cursor": 1, "id": 0}')           # follow the FAQ's link
    assert guide.startswith("[4] Rate limits (local://kb/guides/limits.md)")
    found = session.call("find", '{"pattern": "leaky", "cursor": 1}')
    assert found.startswith("[5] Find results for text: `leaky` in `Frequently asked questions`")
    back = session.call("open", '{"cursor": 0, "id": 0}')            # a result of the first search
    assert back.startswith("[6] ")


@pytest.mark.parametrize("function, args, error", [
    ("open", "{}", "Error: no page is open yet: search first."),
    ("search", "{not json", "Error: browser.search: the arguments are not valid JSON"),
    ("search", "[1, 2]", "Error: browser.search: the arguments must be a JSON object"),
    ("search", '{"topn": 3}', "Error: browser.search: `query` is required"),
    ("search", '{"query": 5}', "Error: browser.search: `query` must be a string (got 5)"),
    ("search", '{"query": "   "}', "Error: browser.search: the query is empty."),
    ("search", '{"query": "x", "color": "red"}',
     "Error: browser.search: unknown argument `color` (allowed: query, topn, source)"),
    ("open", '{"id": 1.5}', "Error: browser.open: `id` must be a number or string (got 1.5)"),
    ("open", '{"cursor": "2"}', "Error: browser.open: `cursor` must be an integer (got \"2\")"),
    ("open", '{"view_source": "yes"}', "Error: browser.open: `view_source` must be a boolean"),
    ("find", '{"cursor": 0}', "Error: browser.find: `pattern` is required"),
    ("browser.delete", "{}", "Error: unknown browser function `browser.delete`; use search, open or find."),
])
def test_bad_arguments_are_text_errors(session, function, args, error):
    call = session.run(function, args)
    assert not call.ok and call.text.startswith(error), call.text
    assert session.stack == []


def test_bad_cursors_and_links_are_text_errors(session):
    session.call("search", '{"query": "bucket"}')
    assert session.call("open", '{"cursor": 7}') == "Error: cursor `7` is out of range; the cursors are 0 to 0."
    assert session.call("open", '{"id": 42}') == "Error: invalid link id `42` on cursor 0."
    assert session.call("find", '{"pattern": "x", "cursor": -3}').startswith("Error: cursor `-3` is out of range")
    assert session.call("browser.open", '{"id": "https://example.com/"}') == (
        "Error: `https://example.com/` is not available: this browser is offline and serves only the "
        "local collection (local://kb/...). Search it with browser.search.")


def test_path_escapes_are_refused(folder, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("TOPSECRET password file")
    os.symlink(outside, folder / "link-out.txt")
    os.symlink(folder / "walrus.txt", folder / "link-in.txt")
    os.symlink(tmp_path, folder / "linked-dir")            # a directory link: never followed
    (folder / ".hidden.txt").write_text("TOPSECRET hidden")
    (folder / "big.txt").write_text("TOPSECRET " * 1000)
    backend = LocalFolderBackend(folder, max_file_bytes=9999)
    assert sorted(backend.skipped) == [("big.txt", "over max_file_bytes (10000 bytes)"),
                                       ("link-out.txt", "outside the folder")]
    assert backend.search("TOPSECRET", 10) == []
    assert backend.fetch("local://kb/link-in.txt").text.startswith("Field notes.")
    for url in ["local://kb/../secret.txt", "local://kb/%2e%2e/secret.txt", "local://kb//etc/passwd",
                "local://kb/linked-dir/secret.txt", "local://kb/link-out.txt", "local://kb/.hidden.txt",
                "file://" + str(outside), str(outside), "local://other/walrus.txt", "local://kb/big.txt"]:
        with pytest.raises(BackendError) as info:
            backend.fetch(url)
        assert "TOPSECRET" not in str(info.value)
    session = BrowserSession(backend)
    text = session.call("open", json.dumps({"id": "local://kb/../secret.txt"}))
    assert text == "Error: `local://kb/../secret.txt` is not a valid page address."


def test_state_round_trip(session, folder):
    session.call("search", '{"query": "leaky bucket"}')
    session.call("open", '{"id": 0}')
    state = json.loads(json.dumps(session.to_dict()))
    restored = BrowserSession.from_dict(LocalFolderBackend(folder), state)
    assert restored.to_dict() == session.to_dict()
    assert restored.call("open", '{"cursor": 0, "id": 1}') == session.call("open", '{"cursor": 0, "id": 1}')
    assert restored.call("find", '{"pattern": "bucket", "cursor": 1}') == \
        session.call("find", '{"pattern": "bucket", "cursor": 1}')
    for bad, message in [({}, "version 1"), ({"version": 1, "stack": "x", "pages": {}}, "state.stack"),
                         ({"version": 1, "stack": [], "pages": {"a": {"url": 1}}}, "page.url"),
                         ({"version": 1, "stack": [], "pages": {"a": {"url": "u", "title": "t", "text": "x",
                                                                         "links": {"0": 5}}}}, "page.links")]:
        with pytest.raises(ValueError, match=message):
            BrowserSession.from_dict(LocalFolderBackend(folder), bad)


def test_pages_kept_are_bounded(folder):
    session = BrowserSession(LocalFolderBackend(folder), max_pages=2)
    session.call("open", '{"id": "local://kb/walrus.txt"}')
    session.call("open", '{"id": "local://kb/long.txt"}')
    session.call("open", '{"id": "local://kb/faq.html"}')
    assert len(session.pages) == 2
    assert session.call("open", '{"cursor": 0}') == "Error: the page of cursor `0` is no longer kept; open it again."
    assert session.call("open", '{"cursor": 2}').startswith("[3] Frequently asked questions")


def test_web_search_call_items(session):
    call = session.run("search", '{"query": "bucket"}')
    assert call.web_search_call("ws_1") == {"type": "web_search_call", "id": "ws_1", "status": "completed",
                                            "action": {"type": "search", "query": "bucket"}}
    call = session.run("browser.open", '{"id": "local://kb/faq.html"}')
    assert call.action == {"type": "open_page", "url": "local://kb/faq.html"} and call.ok
    call = session.run("find", '{"pattern": "leaky"}')
    assert call.action == {"type": "find", "url": "local://kb/faq.html", "pattern": "leaky"}
    call = session.run("open", '{"id": 99}')
    assert call.web_search_call("ws_4")["status"] == "failed"


def test_concurrent_searches_share_one_backend(folder):
    backend = LocalFolderBackend(folder)

    def browse(i):
        s = BrowserSession(backend)
        return s.call("search", '{"query": "quantum walrus migration"}').split("\n")[5]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(browse, range(32)))
    assert len(set(results)) == 1 and "【0†walrus.txt†kb】" in results[0]


def test_progress_on_a_larger_folder(tmp_path):
    for i in range(250):
        (tmp_path / f"doc{i:03}.txt").write_text(f"document {i}")
    seen = []
    backend = LocalFolderBackend(tmp_path, name="many", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(100, 250), (200, 250), (250, 250)] and backend.count == 250
    assert backend.search("document 117", 3)[0].url == "local://many/doc117.txt"


def test_bad_backend_arguments(tmp_path):
    with pytest.raises(BackendError, match="not a folder"):
        LocalFolderBackend(tmp_path / "missing")
    with pytest.raises(BackendError, match="name: letters"):
        LocalFolderBackend(tmp_path, name="a/b")


def test_wrapping_keeps_every_character():
    long_line = "word " * 50
    lines = wrap_lines(long_line + "\n\nnext")
    assert all(len(line) <= 80 for line in lines) and len(lines) == 6, lines
    assert "".join(lines[:-2]) == long_line and lines[-2:] == ["", "next"]


def test_messages_render_like_the_reference(harmony_reference, enc):
    oh, ref_enc = harmony_reference
    ours = harmony_message("search", "[0] results")
    ref = (oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, "browser.search"), "[0] results")
           .with_recipient("assistant").with_channel("analysis"))
    assert enc.render(ours) == ref_enc.render(ref)
    assert enc.decode(enc.render(ours)) == \
        "<|start|>browser.search to=assistant<|channel|>analysis<|message|>[0] results<|end|>"
    system = lh.Message.from_role_and_content(lh.Role.SYSTEM, system_content())
    ref_system = oh.Message.from_role_and_content(
        oh.Role.SYSTEM, oh.SystemContent.new().with_tools(oh.ToolNamespaceConfig.browser()))
    assert enc.render(system) == ref_enc.render(ref_system)
