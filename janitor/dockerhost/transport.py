"""The Docker SDK's transport as the janitor needs it, and what each failure of it means.

The SDK's client with the configured CA pinned and one connection pool per unix socket; and
the mapping of every SDK, requests and socket error to the janitor's: a failed call about the
whole host (version, info, list, events) is a HostError, a failed call about one container a
ContainerError, unless the daemon did not answer at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests
import requests.exceptions
from docker.transport.unixconn import UnixHTTPAdapter

from janitor.errors import (
    ActionFailedError,
    ContainerConflictError,
    ContainerError,
    ContainerGoneError,
    DaemonError,
    HostError,
    HostUnreachableError,
    UnsupportedByEngineError,
)

_HOST_CALLS = frozenset({"version", "info", "list", "events"})
_CONTAINER_IN_PATH = re.compile(r"(?<=/containers/)[^/]+")


class PinnedAPIClient(docker.APIClient):
    """The SDK's client, checking a tcp host's certificate against the configured CA only.

    requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE in the environment replace the CA a
    session was given (psf/requests#3829): with either set, as on many CI images and
    corporate machines, JANITOR_TLS_CA_CERT was ignored for the system's CA bundle.
    """

    # What /_ping's headers say about the engine (Server, Api-Version, Libpod-Api-Version).
    engine_headers: Mapping[str, str]

    def _retrieve_server_version(self) -> str:
        """The API version from /_ping's headers, where the SDK asks /version: Podman answers
        /version by running conmon and its OCI runtime for their versions, over a second on a
        loaded machine, at every tick's connect; /_ping costs nothing on either engine."""
        try:
            response = self.get(f"{self.base_url}/_ping", timeout=self.timeout)
            response.raise_for_status()
        # As the SDK's own version check wraps them; fault() reads the daemon's answer from
        # the cause. requests' errors are OSErrors, like a socket that vanished mid-call.
        except (docker.errors.DockerException, OSError) as exc:
            raise docker.errors.DockerException(
                f"Error while fetching server API version: {exc}"
            ) from exc
        api_version = response.headers.get("Api-Version")
        if not api_version:
            raise docker.errors.DockerException("/_ping named no Api-Version")
        self.engine_headers = response.headers
        return str(api_version)

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
        settings = super().merge_environment_settings(*args, **kwargs)
        # The SDK never passes verify per request: the session's value is what TLS set up.
        settings["verify"] = self.verify
        return settings


class _OnePoolUnixAdapter(UnixHTTPAdapter):
    """docker-py 7 keys its unix-socket connection pools by the whole request URL, so every
    container's inspect or remove opened a fresh socket (a fifth of a sweep's CPU in
    py-spy); all requests go to one socket, so one pool serves them all."""

    def get_connection(self, url: bytes | str, proxies: Any = None) -> Any:
        return super().get_connection("http+docker://localhost", proxies)


def tune_unix_transport(
    api: docker.APIClient, socket_path: str, timeout: float, pool_size: int
) -> None:
    adapter = _OnePoolUnixAdapter(
        "http+unix://" + socket_path,
        timeout=timeout,  # type: ignore[arg-type]  # the stubs say int; floats work
        max_pool_size=pool_size,
    )
    replaced = api.adapters["http+docker://"]
    api.mount("http+docker://", adapter)
    replaced.close()  # its socket from the version call would otherwise linger
    # No proxy or .netrc applies to a unix socket; requests would look them up every call.
    api.trust_env = False


def fault(where: str, operation: str, exc: Exception) -> HostError | ContainerError:
    """What a failed call means for the sweep; `where` names the host and its URL."""
    answer = _daemon_answer(exc)
    if answer is not None:
        if operation in _HOST_CALLS:
            return DaemonError(f"{where} answered {operation} with {_status(answer)}")
        return _container_fault(operation, answer)
    if _is_tls_failure(exc):
        return HostUnreachableError(
            f"{where} TLS handshake failed during {operation} (see JANITOR_TLS_*): {_explain(exc)}"
        )
    if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException):
        return HostUnreachableError(f"{where} did not answer {operation}: {_explain(exc)}")
    return HostUnreachableError(f"{where} failed during {operation}: {exc}")


def _container_fault(operation: str, answer: requests.Response) -> ContainerError:
    said = _daemon_text(answer)
    if answer.status_code == 404:
        if _is_json(answer) and "no such container" in said.lower():
            return ContainerGoneError(f"{operation}: {said}")
        # Go's router answers a route it lacks with a 404 too: text/plain from Podman < 5.1
        # (no /containers/{id}/update), JSON "page not found" from dockerd. The container
        # may be running: never read that as gone.
        if not _is_json(answer) or "page not found" in said.lower():
            path = _CONTAINER_IN_PATH.sub("{id}", urlsplit(answer.request.url or "").path)
            route = f"{answer.request.method} {path}"
            return UnsupportedByEngineError(
                f"the engine has no {route} route, so it cannot {operation} ({_status(answer)})"
            )
    if answer.status_code == 409:
        return ContainerConflictError(f"{operation} refused: {said}")
    return ActionFailedError(f"{operation} failed with {_status(answer)}")


def _daemon_answer(exc: BaseException) -> requests.Response | None:
    """The daemon's error answer behind exc; None when the daemon did not answer."""
    # The SDK wraps the error of its first call (the version check) in a bare DockerException.
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, requests.exceptions.HTTPError) and candidate.response is not None:
            return candidate.response
    return None


def _status(answer: requests.Response) -> str:
    return f"{answer.status_code} {answer.reason}: {_daemon_text(answer)}"


def _daemon_text(answer: requests.Response) -> str:
    """What the daemon said: Docker's JSON {"message": ...}, else the body as text."""
    if _is_json(answer):
        try:
            body = answer.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "message" in body:
            return str(body["message"])
    return answer.text.strip() or str(answer.reason)


def _is_json(response: requests.Response) -> bool:
    content_type = response.headers.get("Content-Type", "")
    return content_type.split(";")[0].strip().lower() == "application/json"


def _is_tls_failure(exc: BaseException) -> bool:
    # The version check's wrapper again: a certificate problem must not read as a daemon
    # that "did not answer".
    return isinstance(exc, requests.exceptions.SSLError) or isinstance(
        exc.__cause__, requests.exceptions.SSLError
    )


def _explain(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
