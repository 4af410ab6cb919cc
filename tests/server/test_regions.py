import socket

import httpx
import pytest


@pytest.mark.local_only  # the local provider's one region
def test_regions_are_the_providers(bearer: httpx.Client) -> None:
    response = bearer.get("/api/regions")
    assert response.status_code == 200
    assert response.json() == {
        "regions": [{"code": "local", "label": f"This host ({socket.gethostname()})"}]
    }


def test_regions_need_a_credential(client: httpx.Client) -> None:
    response = client.get("/api/regions")
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
