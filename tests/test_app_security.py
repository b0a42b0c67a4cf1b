"""The app on a network: what the real server serves over HTTP, the Evaluate handler's refusals, and the
login that app.py requires off loopback."""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import app as app_cli
from ddcs_core.ui.views import UPLOADS, Explorer

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
SECRET = "not-for-the-network"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, cookie: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real app on a free 127.0.0.1 port over a tiny store, with secrets beside it; closed afterwards."""
    from ddcs_core.ui import build_app, launch

    tmp = tmp_path_factory.mktemp("served")
    store, data = tmp / "runs", tmp / "data"
    (store / "tiny").mkdir(parents=True)
    (store / "tiny" / "config.json").write_text('{"kind": "inside"}')
    (store / UPLOADS).mkdir()
    (store / UPLOADS / "staged.txt").write_text(SECRET)
    (tmp / "secret.txt").write_text(SECRET)
    (store / "tiny" / "leak.txt").symlink_to(tmp / "secret.txt")
    (data / "faces").mkdir(parents=True)
    ex = Explorer(store, device="cpu", data_roots=[data])
    demo = build_app(store, device="cpu", explorer=ex)
    port = _free_port()
    launch(demo, store, port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", store.resolve(), tmp.resolve(), demo
    finally:
        demo.close()


def test_only_files_inside_the_run_store_are_served(served):
    url, store, tmp, _ = served
    file_url = f"{url}/gradio_api/file="
    assert _get(file_url + str(store / "tiny" / "config.json")) == (200, '{"kind": "inside"}')
    refused = [str(tmp / "secret.txt"), "/etc/passwd", str(store / "tiny" / "leak.txt"),
               f"{store}/../secret.txt", str(store / UPLOADS / "staged.txt"), "/proc/self/environ"]
    for path in refused:
        for prefix in (file_url, f"{url}/file="):
            status, body = _get(prefix + urllib.parse.quote(path))
            assert status in (403, 404), (prefix, path, status)
            assert SECRET not in body and "root:" not in body


def _evaluate_handler(demo):
    return next(f.fn for f in demo.fns.values() if f.name == "on_evaluate")


def test_evaluate_handler_refuses_outside_the_roots_alike_whether_or_not_it_exists(served):
    _, store, tmp, demo = served
    on_evaluate = _evaluate_handler(demo)
    ctx = [None, None, "All classes", "All", 0, None, "targets", None, None, None, 30]
    messages = set()
    for path in (str(tmp / "secret.txt"), str(tmp / "no-such-file"), "/etc", "/root/.ssh", "/proc/self/root",
                 "../secret.txt", str(store / "tiny" / "leak.txt"), "/no/such/folder"):
        with pytest.warns(UserWarning):
            out = on_evaluate(path, "faces", None, None, "", "fast", "cpu", *ctx)
        (html,) = out.values()
        messages.add(html.replace(path.replace("/", "&#x2F;"), "<path>").replace(path, "<path>"))
    assert len(messages) == 1, messages
    (html,) = messages
    assert "not under the data roots" in html and "Errno" not in html and "Traceback" not in html
    assert not any(p.name != "tiny" and p.name != UPLOADS for p in store.iterdir())


def test_login_guards_the_file_route(tmp_path):
    from ddcs_core.ui import build_app, launch

    store = tmp_path / "runs"
    (store / "tiny").mkdir(parents=True)
    (store / "tiny" / "config.json").write_text("{}")
    demo = build_app(store, device="cpu", explorer=Explorer(store, device="cpu"))
    port = _free_port()
    launch(demo, store, port=port, auth=("ann", "s3cret"), prevent_thread_lock=True, quiet=True)
    try:
        file_url = f"http://127.0.0.1:{port}/gradio_api/file={store.resolve() / 'tiny' / 'config.json'}"
        assert _get(file_url)[0] in (401, 403)
        login = urllib.request.Request(f"http://127.0.0.1:{port}/login",
                                       data=urllib.parse.urlencode({"username": "ann", "password": "s3cret"}).encode())
        with urllib.request.urlopen(login, timeout=10) as r:
            cookies = "; ".join(c.split(";")[0] for c in r.headers.get_all("set-cookie"))
        assert _get(file_url, cookies) == (200, "{}")
    finally:
        demo.close()


# app.py: the login off loopback ------------------------------------------------------------------------
@pytest.fixture()
def launched(monkeypatch):
    """main() up to launch: what it would serve, without serving."""
    calls = []
    monkeypatch.setattr("ddcs_core.ui.build_app", lambda *a, **k: "app")
    monkeypatch.setattr("ddcs_core.ui.launch", lambda *a, **k: calls.append(k))
    monkeypatch.delenv("DDCS_AUTH", raising=False)
    return calls


def test_network_host_without_login_is_refused_in_one_line(launched, tmp_path, capsys):
    for extra in (["--host", "0.0.0.0"], ["--host", "192.168.1.7"], ["--host", "::"], ["--share"]):
        assert app_cli.main([*extra, "--runs", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "without a login" in err
        assert "DDCS_AUTH" in err and "--insecure-no-auth" in err
    assert launched == [] and not (tmp_path / "runs").exists()


def test_insecure_no_auth_serves_with_a_warning(launched, tmp_path, capsys):
    assert app_cli.main(["--host", "0.0.0.0", "--insecure-no-auth", "--runs", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: --host 0.0.0.0 without a login") and "anyone who can reach" in err
    assert launched[0]["auth"] is None and launched[0]["host"] == "0.0.0.0"


def test_login_from_env_file_or_flag(launched, tmp_path, monkeypatch, capsys):
    runs = ["--runs", str(tmp_path / "runs"), "--host", "0.0.0.0"]
    monkeypatch.setenv("DDCS_AUTH", "ann:from env")
    assert app_cli.main(runs) == 0 and launched[-1]["auth"] == ("ann", "from env")
    (tmp_path / "login").write_text("bob:from:file\n")
    assert app_cli.main([*runs, "--auth-file", str(tmp_path / "login")]) == 0
    assert launched[-1]["auth"] == ("bob", "from:file")
    assert app_cli.main([*runs, "--auth", "cy:flag"]) == 0 and launched[-1]["auth"] == ("cy", "flag")
    assert capsys.readouterr().err == ""
    cases = [(["--auth", "cy:flag", "--auth-file", str(tmp_path / "login")], "one way only"),
             (["--auth-file", str(tmp_path / "missing")], "cannot be read"),
             (["--data-root", str(tmp_path / "missing")], "not a folder")]
    for extra, message in cases:
        assert app_cli.main([*runs, *extra]) == 2 and message in capsys.readouterr().err
    monkeypatch.setenv("DDCS_AUTH", "nocolon")
    assert app_cli.main(runs) == 2 and "DDCS_AUTH must look like user:password" in capsys.readouterr().err
    assert len(launched) == 3


def test_loopback_hosts():
    assert all(app_cli.is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(app_cli.is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.7", "example.org", ""))
