"""Accounts, sign-in sessions, cookies, cross-origin refusal and the sign-in rate limit."""

from collections.abc import Callable

import httpx
import pytest

from gentity.settings import Settings
from tests.conftest import PASSWORD, LiveServer, signup


def test_first_signup_creates_admin_then_signup_closes(client: httpx.Client) -> None:
    assert client.get("/api/auth/status").json() == {"setupRequired": True, "signupOpen": True}
    first = signup(client, "First@Example.com")
    assert first.status_code == 200
    assert first.json()["isAdmin"] is True
    assert first.json()["email"] == "first@example.com"
    assert client.get("/api/auth/status").json() == {"setupRequired": False, "signupOpen": False}
    with httpx.Client(base_url=str(client.base_url)) as stranger:
        second = signup(stranger, "second@example.com")
        assert second.status_code == 403
        assert set(second.json()) == {"error"}


def test_signup_open_by_setting(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    server = server_factory(settings_factory(allow_signup=True))
    with httpx.Client(base_url=server.url) as c:
        assert signup(c, "a@example.com").status_code == 200
        c.cookies.clear()
        second = signup(c, "b@example.com")
        assert second.status_code == 200
        assert second.json()["isAdmin"] is False
        c.cookies.clear()
        duplicate = signup(c, "B@example.com")
        assert duplicate.status_code == 409
        assert "already exists" in duplicate.json()["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "x@example.com", "password": "short"}, "password"),
        ({"email": "x@example.com"}, "password"),
        ({"email": 5, "password": PASSWORD}, "email"),
    ],
)
def test_signup_validation_names_the_field(
    client: httpx.Client, body: dict[str, object], fragment: str
) -> None:
    response = client.post("/api/auth/signup", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_session_cookie_attributes_over_http(admin: httpx.Client) -> None:
    response = admin.post(
        "/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD}
    )
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("gentity_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    assert "Path=/" in cookie


def test_session_cookie_is_host_prefixed_and_secure_over_https(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    # The test client plays the TLS-terminating proxy on 127.0.0.1.
    server = server_factory(settings_factory(trusted_proxies="127.0.0.1"))
    with httpx.Client(base_url=server.url) as c:
        signup(c, "admin@example.com")
        response = c.post(
            "/api/auth/login",
            json={"email": "admin@example.com", "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
        )
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-gentity_session=")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "Domain" not in cookie


def _cookie_value(set_cookie: str, name: str) -> str:
    assert set_cookie.startswith(f"{name}="), set_cookie
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def test_over_https_only_the_host_prefixed_cookie_signs_in(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    # A page on a sibling subdomain (a preview host) can set a plain ``gentity_session`` for
    # the parent domain from script, but never a ``__Host-`` one: over https the plain name
    # must count for nothing, or it would sign the victim in as whoever planted it.
    server = server_factory(settings_factory(public_url="https://gentity.example.com"))
    with httpx.Client(base_url=server.url) as c:
        signup(c, "admin@example.com")
        login = c.post("/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD})
        secret = _cookie_value(login.headers["set-cookie"], "__Host-gentity_session")
    # As the TLS proxy in front passes it on: the public URL's host, over plain http.
    host = {"Host": "gentity.example.com"}
    with httpx.Client(base_url=server.url, headers=host) as browser:
        planted = {"Cookie": f"gentity_session={secret}"}
        assert browser.get("/api/auth/me", headers=planted).status_code == 401
        page = browser.get("/dashboard", headers=planted)
        assert page.status_code in (302, 303, 307) and "/login" in page.headers["location"]
        own = {"Cookie": f"__Host-gentity_session={secret}"}
        assert browser.get("/api/auth/me", headers=own).json()["email"] == "admin@example.com"
        assert browser.get("/dashboard", headers=own).status_code == 200
        # Signing out with the planted name ends nothing; with the real one it does.
        same_origin = {"Origin": "https://gentity.example.com"}
        assert browser.post("/api/auth/logout", headers={**planted, **same_origin}).is_success
        assert browser.get("/api/auth/me", headers=own).status_code == 200
        out = browser.post("/api/auth/logout", headers={**own, **same_origin})
        assert out.headers["set-cookie"].startswith("__Host-gentity_session=")
        assert browser.get("/api/auth/me", headers=own).status_code == 401


def test_over_http_the_plain_cookie_is_the_one_read(admin: httpx.Client) -> None:
    secret = admin.cookies["gentity_session"]
    with httpx.Client(base_url=str(admin.base_url)) as other:
        prefixed = {"Cookie": f"__Host-gentity_session={secret}"}
        assert other.get("/api/auth/me", headers=prefixed).status_code == 401
        plain = {"Cookie": f"gentity_session={secret}"}
        assert other.get("/api/auth/me", headers=plain).status_code == 200


def test_wrong_password_is_401_with_no_cookie(admin: httpx.Client) -> None:
    admin.cookies.clear()
    response = admin.post(
        "/api/auth/login", json={"email": "admin@example.com", "password": "wrong password"}
    )
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid email or password"}
    assert "set-cookie" not in response.headers
    unknown = admin.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong password"}
    )
    assert unknown.json() == response.json()


def test_me_and_logout_end_the_session(admin: httpx.Client) -> None:
    assert admin.get("/api/auth/me").json()["email"] == "admin@example.com"
    stolen = dict(admin.cookies)
    assert admin.post("/api/auth/logout").status_code == 200
    assert admin.get("/api/auth/me").status_code == 401
    # The old cookie value is dead server-side, not just cleared in this client.
    with httpx.Client(base_url=str(admin.base_url), cookies=stolen) as replay:
        assert replay.get("/api/auth/me").status_code == 401


def test_sessions_can_be_listed_and_revoked(admin: httpx.Client) -> None:
    with httpx.Client(base_url=str(admin.base_url)) as laptop:
        laptop.post("/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD})
        sessions = admin.get("/api/auth/sessions").json()["sessions"]
        assert len(sessions) == 2
        assert sum(s["current"] for s in sessions) == 1
        other = next(s for s in sessions if not s["current"])
        assert admin.delete(f"/api/auth/sessions/{other['id']}").json() == {"ok": True}
        assert laptop.get("/api/auth/me").status_code == 401
        assert admin.get("/api/auth/me").status_code == 200
        assert admin.delete(f"/api/auth/sessions/{other['id']}").status_code == 404


def test_cross_origin_cookie_post_is_refused_and_changes_nothing(admin: httpx.Client) -> None:
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        response = admin.post("/api/tokens", json={"name": "csrf"}, headers=headers)
        assert response.status_code == 403, headers
        assert response.json() == {"error": "Cross-origin request refused"}
    assert admin.get("/api/tokens").json() == {"tokens": []}
    # Same origin is fine.
    same = admin.post("/api/tokens", json={"name": "ok"}, headers={"Origin": str(admin.base_url)})
    assert same.status_code == 200


def test_cross_origin_logout_is_refused(admin: httpx.Client) -> None:
    response = admin.post("/api/auth/logout", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert admin.get("/api/auth/me").status_code == 200


def test_bearer_requests_skip_the_origin_check(bearer: httpx.Client) -> None:
    response = bearer.post(
        "/api/tokens", json={"name": "scripted"}, headers={"Origin": "https://elsewhere.example"}
    )
    assert response.status_code == 200


def test_failed_sign_ins_are_limited_per_account_without_locking_out_others(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    server = server_factory(settings_factory(allow_signup=True, login_max_failures_per_account=3))
    with httpx.Client(base_url=server.url) as c:
        signup(c, "victim@example.com")
        signup(c, "bystander@example.com")
        c.cookies.clear()
        bad = {"email": "victim@example.com", "password": "guess guess"}
        assert [c.post("/api/auth/login", json=bad).status_code for _ in range(3)] == [401] * 3
        limited = c.post("/api/auth/login", json=bad)
        assert limited.status_code == 429
        assert "error" in limited.json()
        assert int(limited.headers["Retry-After"]) > 0
        # Even the right password is refused while the account is limited...
        good = {"email": "victim@example.com", "password": PASSWORD}
        assert c.post("/api/auth/login", json=good).status_code == 429
        # ...but other accounts sign in as usual.
        other = {"email": "bystander@example.com", "password": PASSWORD}
        assert c.post("/api/auth/login", json=other).status_code == 200


def test_failed_sign_ins_are_limited_per_address(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    server = server_factory(
        settings_factory(login_max_failures_per_address=4, trusted_proxies="127.0.0.1")
    )
    with httpx.Client(base_url=server.url) as c:
        signup(c, "admin@example.com")
        c.cookies.clear()
        for i in range(4):
            body = {"email": f"spray{i}@example.com", "password": "guess guess"}
            assert c.post("/api/auth/login", json=body).status_code == 401
        good = {"email": "admin@example.com", "password": PASSWORD}
        assert c.post("/api/auth/login", json=good).status_code == 429
        # The same account from another address is not affected.
        other_address = {"X-Forwarded-For": "198.51.100.7"}
        assert c.post("/api/auth/login", json=good, headers=other_address).status_code == 200
