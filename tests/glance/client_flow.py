"""Drive one real OpenStack client through an image's life against a base URL (Glance
or the gateway in front of it) and print the outcome of every step as one JSON document.

Runs inside the Glance virtualenv, never in the gateway's (clients.py starts it):

    python -I client_flow.py --client openstacksdk --url http://127.0.0.1:9292 \
        --size-mib 16 --workdir /tmp/x

No Keystone: every client is handed the endpoint and a token that nobody checks
(Glance runs the unauthenticated-context pipeline).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

MIB = 1 << 20
TOKEN = "no-keystone"
CLIENT_PACKAGES = ("python-glanceclient", "openstacksdk", "keystoneauth1")


class ClientError(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Client(Protocol):
    def create(self, name: str, properties: dict[str, str]) -> str: ...
    def upload(self, image_id: str, path: Path, size: int) -> None: ...
    def download(self, image_id: str, path: Path) -> None: ...
    def update(self, image_id: str, name: str, properties: dict[str, str]) -> None: ...
    def remove_property(self, image_id: str, key: str) -> None: ...
    def set_attribute(self, image_id: str, attribute: str, value: Any) -> None: ...
    def delete(self, image_id: str) -> None: ...


class GlanceClientLibrary:
    def __init__(self, url: str) -> None:
        from glanceclient import Client as GlanceClient
        from glanceclient import exc

        self._client = GlanceClient("2", endpoint=url, token=TOKEN)
        self._errors = exc.HTTPException

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except self._errors as error:
            raise ClientError(error.code, str(error.details)) from error

    def create(self, name: str, properties: dict[str, str]) -> str:
        image = self._call(
            lambda: self._client.images.create(
                name=name, disk_format="raw", container_format="bare", **properties
            )
        )
        return str(image["id"])

    def upload(self, image_id: str, path: Path, size: int) -> None:
        with path.open("rb") as data:
            self._call(lambda: self._client.images.upload(image_id, data, image_size=size))

    def download(self, image_id: str, path: Path) -> None:
        def fetch() -> None:
            # The iterator verifies Glance's checksum and os_hash_value as it goes.
            with path.open("wb") as out:
                for chunk in self._client.images.data(image_id):
                    out.write(chunk)

        self._call(fetch)

    def update(self, image_id: str, name: str, properties: dict[str, str]) -> None:
        self._call(lambda: self._client.images.update(image_id, name=name, **properties))

    def remove_property(self, image_id: str, key: str) -> None:
        self._call(lambda: self._client.images.update(image_id, remove_props=[key]))

    def set_attribute(self, image_id: str, attribute: str, value: Any) -> None:
        self._call(lambda: self._client.images.update(image_id, **{attribute: value}))

    def delete(self, image_id: str) -> None:
        self._call(lambda: self._client.images.delete(image_id))


class GlanceClientCli:
    # Options of `glance image-update` for base attributes; anything else is --property.
    FLAGS: ClassVar[dict[str, str]] = {
        "min_ram": "--min-ram",
        "min_disk": "--min-disk",
        "visibility": "--visibility",
        "protected": "--protected",
        "disk_format": "--disk-format",
        "container_format": "--container-format",
    }
    ERROR = re.compile(r"HTTP (\d{3})[^:]*: (.*)", re.DOTALL)

    def __init__(self, url: str) -> None:
        executable = Path(sys.executable).with_name("glance")
        self._base = [
            str(executable),
            "--os-image-url",
            url,
            "--os-auth-token",
            TOKEN,
            "--os-image-api-version",
            "2",
        ]

    def _run(self, *args: str) -> str:
        # glance reads image data from stdin whenever stdin is not a terminal, even
        # /dev/null (an empty upload); only a closed stdin means "no data".
        result = subprocess.run(
            [*self._base, *args],
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.close(0),
            timeout=1800,
            check=False,
        )
        if result.returncode != 0:
            found = self.ERROR.search(result.stderr)
            if found is None:
                raise ClientError(None, result.stderr.strip())
            raise ClientError(int(found.group(1)), html.unescape(found.group(2)).strip())
        return result.stdout

    def create(self, name: str, properties: dict[str, str]) -> str:
        table = self._run(
            "image-create",
            "--name",
            name,
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            *self._properties(properties),
        )
        return parse_table(table)["id"]

    def upload(self, image_id: str, path: Path, size: int) -> None:
        self._run("image-upload", "--file", str(path), "--size", str(size), image_id)

    def download(self, image_id: str, path: Path) -> None:
        self._run("image-download", "--file", str(path), image_id)

    def update(self, image_id: str, name: str, properties: dict[str, str]) -> None:
        self._run("image-update", "--name", name, *self._properties(properties), image_id)

    def remove_property(self, image_id: str, key: str) -> None:
        self._run("image-update", "--remove-property", key, image_id)

    def set_attribute(self, image_id: str, attribute: str, value: Any) -> None:
        flag = self.FLAGS.get(attribute)
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        args = [flag, text] if flag else ["--property", f"{attribute}={text}"]
        self._run("image-update", *args, image_id)

    def delete(self, image_id: str) -> None:
        self._run("image-delete", image_id)

    @staticmethod
    def _properties(properties: dict[str, str]) -> list[str]:
        return [arg for k, v in properties.items() for arg in ("--property", f"{k}={v}")]


def parse_table(text: str) -> dict[str, str]:
    """Read glance's two-column table; a wrapped value continues on rows with no key."""
    rows: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|", 1)]
        if len(cells) != 2 or cells[0] == "Property":
            continue
        if cells[0]:
            key = cells[0]
            rows[key] = cells[1]
        elif key:
            rows[key] += cells[1]
    return rows


class OpenStackSdk:
    def __init__(self, url: str) -> None:
        import openstack
        from openstack import exceptions

        # keystoneauth's "none" plugin: no token request, no catalog; the image
        # endpoint comes from the override and the API version from discovery on it.
        self._conn = openstack.connect(
            auth_type="none",
            auth={"endpoint": url},
            image_endpoint_override=url,
            load_yaml_config=False,
            load_envvars=False,
        )
        self._errors = exceptions.HttpException

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except self._errors as error:
            raise ClientError(error.status_code, str(error.details or error.message)) from error

    def create(self, name: str, properties: dict[str, str]) -> str:
        image = self._call(
            lambda: self._conn.image.create_image(
                name,
                disk_format="raw",
                container_format="bare",
                allow_duplicates=True,
                **properties,
            )
        )
        return str(image.id)

    def upload(self, image_id: str, path: Path, size: int) -> None:
        def put() -> None:
            image = self._conn.image.get_image(image_id)
            with path.open("rb") as data:
                image.upload(self._conn.image, data=data, size=size)

        self._call(put)

    def download(self, image_id: str, path: Path) -> None:
        self._call(lambda: self._conn.image.download_image(image_id, output=str(path)))

    def update(self, image_id: str, name: str, properties: dict[str, str]) -> None:
        def patch() -> None:
            image = self._conn.image.get_image(image_id)
            merged = {**image.properties, **properties}
            self._conn.image.update_image(image, name=name, properties=merged)

        self._call(patch)

    def remove_property(self, image_id: str, key: str) -> None:
        def patch() -> None:
            image = self._conn.image.get_image(image_id)
            kept = {k: v for k, v in image.properties.items() if k != key}
            self._conn.image.update_image(image, properties=kept)

        self._call(patch)

    def set_attribute(self, image_id: str, attribute: str, value: Any) -> None:
        def patch() -> None:
            image = self._conn.image.get_image(image_id)
            self._conn.image.update_image(image, **{attribute: value})

        self._call(patch)

    def delete(self, image_id: str) -> None:
        self._call(lambda: self._conn.image.delete_image(image_id))


CLIENTS: dict[str, Callable[[str], Client]] = {
    "glanceclient-cli": GlanceClientCli,
    "glanceclient-lib": GlanceClientLibrary,
    "openstacksdk": OpenStackSdk,
}


def write_data(path: Path, size_mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size_mib):
            block = os.urandom(MIB)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while block := data.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def get_image(url: str, image_id: str) -> dict[str, Any]:
    """Read the image with plain HTTP, so that what a step did is judged the same way
    for every client."""
    with urllib.request.urlopen(f"{url}/v2/images/{image_id}", timeout=60) as response:
        image: dict[str, Any] = json.load(response)
        return image


class Flow:
    def __init__(self, client: Client, url: str) -> None:
        self.client = client
        self.url = url
        self.steps: dict[str, dict[str, Any]] = {}

    def step(self, name: str, action: Callable[[], Any], image_id: str | None = None) -> bool:
        outcome: dict[str, Any]
        try:
            value = action()
        except ClientError as error:
            outcome = {"ok": False, "status": error.status, "message": error.message}
        except Exception as error:  # a client-side failure, e.g. a checksum mismatch
            outcome = {"ok": False, "status": None, "message": f"{type(error).__name__}: {error}"}
        else:
            outcome = {"ok": True}
            if isinstance(value, dict):
                outcome.update(value)
        if image_id is not None:
            outcome["image"] = get_image(self.url, image_id)
        self.steps[name] = outcome
        return bool(outcome["ok"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    upload, download = workdir / "upload.bin", workdir / "download.bin"
    uploaded_sha256 = write_data(upload, args.size_mib)
    size = args.size_mib * MIB
    client = CLIENTS[args.client](args.url)
    flow = Flow(client, args.url)
    image_id = ""

    def create() -> dict[str, str]:
        nonlocal image_id
        image_id = client.create(f"{args.client}-flow", {args.property: "v1"})
        return {"id": image_id}

    def fetch() -> dict[str, Any]:
        client.download(image_id, download)
        return {"sha256": file_sha256(download), "size": download.stat().st_size}

    if flow.step("create", create):
        flow.step("upload", lambda: client.upload(image_id, upload, size), image_id)
        flow.step("download", fetch)
        flow.step(
            "update",
            lambda: client.update(image_id, f"{args.client}-renamed", {args.property: "v2"}),
            image_id,
        )
        flow.step("remove_property", lambda: client.remove_property(image_id, args.property), image_id)
        flow.step(
            "forbidden_update",
            lambda: client.set_attribute(image_id, args.forbidden_attribute, json.loads(args.forbidden_value)),
            image_id,
        )
        flow.step("delete", lambda: client.delete(image_id))
    return {
        "client": args.client,
        "url": args.url,
        "size": size,
        "sha256": uploaded_sha256,
        "property": args.property,
        "forbidden_attribute": args.forbidden_attribute,
        "versions": {name: importlib.metadata.version(name) for name in CLIENT_PACKAGES},
        "steps": flow.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=sorted(CLIENTS), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--size-mib", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--property", default="flow_prop")
    parser.add_argument("--forbidden-attribute", default="min_ram")
    parser.add_argument("--forbidden-value", default="512", help="a JSON value")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
