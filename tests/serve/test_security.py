"""edgert serve's gatekeeping: the API key (401 with OpenAI's error object, /health open, the
key from EDGERT_API_KEY), the refusal of a non-loopback bind without a key (in the library
and in the CLI, before any model loads), and CORS only for the origins given (preflights
without the key). No model: a stand-in runtime answers /v1/models and /health."""

from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from edgert.cli import main as cli  # noqa: E402
from edgert.errors import BundleError, UsageError  # noqa: E402
from edgert.serve import app as serve_app  # noqa: E402
from edgert.serve import security  # noqa: E402
from edgert.serve.app import check_exposure, create_app  # noqa: E402
from edgert.serve.queue import Server  # noqa: E402

KEY = "sk-edgert-test-0123456789"
ORIGIN = "http://localhost:3000"
GOOD_CHAT = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}


class StandInRuntime:
    """What the routes below ask of a runtime, without a model."""

    def __init__(self):
        variants = [SimpleNamespace(name="q4", format="gguf", quantization="Q4_1", size_bytes=1)]
        self.bundle = SimpleNamespace(variants=variants, manifest=SimpleNamespace(model_name="smol", accuracy_table=[]))
        self.profile, self.default_variant = None, "q4"

    def loaded(self):
        return ["q4"]


@pytest.fixture
def make_client():
    servers = []

    def make(**options):
        server = Server(StandInRuntime(), model_id="smol")
        servers.append(server)
        return TestClient(create_app(server, **options))

    yield make
    for server in servers:
        server.close()


def _is_401(response):
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] in ("invalid_request_error", "authentication_error")
    assert error["code"] == "invalid_api_key" and error["param"] is None and error["message"]
    return error["message"]


# ---------------------------------------------------------------------------- the API key
@pytest.mark.parametrize("headers", [
    {},                                          # missing
    {"Authorization": f"Bearer {KEY}x"},         # wrong
    {"Authorization": f"Bearer {KEY[:-1]}"},     # a prefix of the key
    {"Authorization": "Bearer "},                # empty
    {"Authorization": f"Basic {KEY}"},           # another scheme
    {"Authorization": KEY},                      # no scheme
    {"X-Api-Key": KEY},                          # not where the key goes
])
@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("GET", "/v1/models/q4"), ("GET", "/metrics"),
                                          ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                                          ("GET", "/v1/nothing-here")])
def test_a_wrong_or_missing_key_is_a_401_on_every_route_but_health(make_client, headers, method, path):
    client = make_client(api_key=KEY)
    response = client.request(method, path, headers=headers, json=GOOD_CHAT if method == "POST" else None)
    message = _is_401(response)
    assert KEY not in message  # the key is not echoed back


def test_the_right_key_passes_and_health_stays_open(make_client):
    client = make_client(api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    models = client.get("/v1/models", headers=auth)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "smol"
    assert client.get("/metrics", headers={"Authorization": f"bearer  {KEY}"}).status_code == 200  # scheme any case
    # with the key, a body is the route's to judge: a 400 about the body, not a 401
    bad = client.post("/v1/chat/completions", headers=auth, content=b"{not json")
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    # the 401s are counted like any answer
    client.get("/v1/models")
    assert 'edgert_requests_total{endpoint="/v1/models",code="401"} 1' in client.get("/metrics", headers=auth).text


def test_the_key_is_compared_in_constant_time(make_client, monkeypatch):
    calls = []
    real = security.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    client = make_client(api_key=KEY)
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert calls == [(b"nope", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_a_header_that_is_not_ascii_is_a_401_not_a_500(make_client):
    client = make_client(api_key=KEY)
    _is_401(client.get("/v1/models", headers={"Authorization": "Bearer sk-\u00e9\u00e8".encode("latin-1")}))


def test_a_key_a_header_cannot_carry_is_refused_when_the_app_is_made(make_client):
    for bad in ("", "two words", "caf\u00e9"):
        with pytest.raises(UsageError, match="expected a key of visible ASCII"):
            make_client(api_key=bad)


def test_without_a_key_every_route_is_open(make_client):
    client = make_client()  # create_app(server) as before: no key
    assert client.get("/v1/models").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert "www-authenticate" not in client.get("/v1/models").headers


def test_the_key_comes_from_the_option_else_the_environment():
    assert security.resolve_api_key(None, {"EDGERT_API_KEY": "from-env"}) == "from-env"
    assert security.resolve_api_key("from-option", {"EDGERT_API_KEY": "from-env"}) == "from-option"
    assert security.resolve_api_key(None, {}) is None
    assert security.resolve_api_key(None, {"EDGERT_API_KEY": ""}) is None  # set but empty: none
    for bad in ("", "two words", "caf\u00e9", "line\nbreak"):
        with pytest.raises(UsageError, match="--api-key: expected a key of visible ASCII"):
            security.resolve_api_key(bad, {})
    with pytest.raises(UsageError, match="EDGERT_API_KEY: expected"):
        security.resolve_api_key(None, {"EDGERT_API_KEY": "has space"})


def test_the_key_from_the_environment_is_the_one_the_app_requires(make_client, monkeypatch):
    monkeypatch.setenv("EDGERT_API_KEY", KEY)
    client = make_client(api_key=serve_app.resolve_api_key(None))
    _is_401(client.get("/v1/models"))
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


# ---------------------------------------------------------------------------- the bind address
@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost",
                                  "::ffff:127.0.0.1"])
def test_loopback_addresses_need_no_key(host):
    assert security.is_loopback(host)
    assert check_exposure(host, None, insecure=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "fe80::1%eth0", "my-laptop.local",
                                  "", "128.0.0.1", "::ffff:10.0.0.1"])
def test_a_bind_other_machines_can_reach_needs_a_key_or_insecure_no_auth(host):
    assert not security.is_loopback(host)
    with pytest.raises(UsageError) as refused:
        check_exposure(host, None, insecure=False)
    message = str(refused.value)
    assert "\n" not in message and "--api-key" in message and "--insecure-no-auth" in message
    assert check_exposure(host, KEY, insecure=False) is None  # a key: fine, nothing to warn about
    warning = check_exposure(host, None, insecure=True)
    assert warning and "anyone" in warning


@pytest.fixture
def no_model(monkeypatch):
    """The CLI's serve with the model loading and the port check replaced by recorders: the
    Runtime raises a BundleError once reached, so a test sees whether it was."""
    reached = {"runtime": 0, "address": 0}

    def runtime(*_args, **_kwargs):
        reached["runtime"] += 1
        raise BundleError("stand-in: the runtime was reached")

    def address(*_args):
        reached["address"] += 1

    monkeypatch.setattr(cli, "Runtime", runtime)
    monkeypatch.setattr(serve_app, "check_address", address)
    monkeypatch.delenv("EDGERT_API_KEY", raising=False)
    return reached


def _serve(tmp_path, *args, env=None):
    return CliRunner().invoke(cli.main, ["serve", str(tmp_path / "bundle"), "--port", "18080", *args], env=env)


def test_the_cli_refuses_an_open_bind_before_loading_anything(tmp_path, no_model):
    result = _serve(tmp_path, "--host", "0.0.0.0")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--insecure-no-auth" in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert no_model == {"runtime": 0, "address": 0}  # refused before the port check and the model


@pytest.mark.parametrize("args, env", [
    (["--insecure-no-auth"], None),
    (["--api-key", KEY], None),
    ([], {"EDGERT_API_KEY": KEY}),
])
def test_the_cli_allows_an_open_bind_with_a_key_or_insecure_no_auth(tmp_path, no_model, args, env):
    result = _serve(tmp_path, "--host", "0.0.0.0", *args, env=env)
    assert "stand-in: the runtime was reached" in result.stderr, result.output
    assert no_model == {"runtime": 1, "address": 1}


def test_the_cli_on_loopback_needs_no_key(tmp_path, no_model):
    result = _serve(tmp_path)  # --host defaults to 127.0.0.1
    assert "stand-in: the runtime was reached" in result.stderr and no_model["runtime"] == 1


def test_the_cli_refuses_a_bad_key_or_origin_in_one_line(tmp_path, no_model):
    for args in (["--api-key", "two words"], ["--cors-origin", "http://localhost:3000/"],
                 ["--cors-origin", "localhost:3000"]):
        result = _serve(tmp_path, *args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert no_model["runtime"] == 0


def test_serve_help_describes_the_options():
    result = CliRunner().invoke(cli.main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("--api-key", "EDGERT_API_KEY", "Authorization: Bearer", "--insecure-no-auth", "--cors-origin",
                   "/health", "(repeatable"):
        assert needle in text, needle


# ---------------------------------------------------------------------------- CORS
def test_cors_headers_only_for_the_origins_given(make_client):
    client = make_client(api_key=KEY, cors_origins=[ORIGIN, "https://app.example"])
    auth = {"Authorization": f"Bearer {KEY}"}
    allowed = client.get("/v1/models", headers={**auth, "Origin": ORIGIN})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert client.get("/v1/models", headers={**auth, "Origin": "https://app.example"}).headers[
        "access-control-allow-origin"] == "https://app.example"
    other = client.get("/v1/models", headers={**auth, "Origin": "http://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    # a 401 to an allowed origin carries the CORS headers, so the page can read why
    refused = client.get("/v1/models", headers={"Origin": ORIGIN})
    _is_401(refused)
    assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_no_cors_origins_no_cors_headers(make_client):
    client = make_client()
    response = client.get("/v1/models", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert not [h for h in response.headers if h.startswith("access-control-")]
    preflight = client.options("/v1/chat/completions", headers={"Origin": ORIGIN,
                                                                "Access-Control-Request-Method": "POST"})
    assert preflight.status_code >= 400 and "access-control-allow-origin" not in preflight.headers


def test_a_preflight_from_an_allowed_origin_needs_no_key(make_client):
    client = make_client(api_key=KEY, cors_origins=[ORIGIN])
    preflight = client.options("/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed_headers = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    # from another origin the preflight is refused, with no CORS headers for the browser to accept
    other = client.options("/v1/chat/completions", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert other.status_code >= 400 and "access-control-allow-origin" not in other.headers


def test_origins_are_checked():
    assert security.check_origins([ORIGIN, "https://a.example:8443", "*"]) == (ORIGIN, "https://a.example:8443", "*")
    for bad in ("http://localhost:3000/", "localhost:3000", "http://a.example/path", ""):
        with pytest.raises(UsageError, match="--cors-origin: expected an origin"):
            security.check_origins([bad])
