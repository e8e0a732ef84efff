"""Pin kubetune's four images to the digests a release pushed, in the Helm chart's values and in rendered manifests.

A tag can be pushed again; a digest names exactly the bytes that were tested, scanned and signed. The release
workflow runs this after pushing the images: `values` writes the digests into the chart's values.yaml before it is
packaged (the published chart then pulls repository:tag@digest; the vLLM server image is `server.vllmImage`),
`manifests` rewrites a kustomize build of the manifests (the release's install.yaml) the same way, in the
operator's container image and in the trainer, server and vLLM server image settings it passes on
(KUBETUNE_TRAINER_IMAGE, KUBETUNE_SERVER_IMAGE, KUBETUNE_SERVER_VLLM_IMAGE).

    python tools/pin_digests.py values deploy/helm/kubetune/values.yaml \
        --operator sha256:... --trainer ... --server ... --server-vllm ...
    python tools/pin_digests.py manifests install.yaml \
        --operator sha256:... --trainer ... --server ... --server-vllm ...
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REGISTRY = "ghcr.io/kubetune"
# The images the release pushes, as ghcr.io/kubetune/kubetune-<name> (server-vllm: server-image/Dockerfile.vllm).
IMAGES = ("operator", "trainer", "server", "server-vllm")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


class PinError(ValueError):
    """A digest is malformed, or an image is not where the file should name it."""


def repository(image: str) -> str:
    return f"{REGISTRY}/kubetune-{image}"


def _checked(digests: dict[str, str]) -> dict[str, str]:
    for image, digest in digests.items():
        if image not in IMAGES:
            raise PinError(f"unknown image {image!r} (known: {', '.join(IMAGES)})")
        if not DIGEST.fullmatch(digest):
            raise PinError(f"the {image} digest {digest!r} is not of the form sha256:<64 hex digits>")
    return digests


def pin_values(text: str, digests: dict[str, str]) -> str:
    """values.yaml with each image's `digest:` set: the first `digest:` line after its `repository:` line."""
    for image, digest in _checked(digests).items():
        pattern = re.compile(
            rf"(^[ \t]*repository: {re.escape(repository(image))}\n(?:(?![ \t]*repository:).*\n)*?[ \t]*digest: )\S*",
            re.MULTILINE,
        )
        text, count = pattern.subn(rf'\g<1>"{digest}"', text, count=1)
        if count != 1:
            raise PinError(f"no `digest:` after `repository: {repository(image)}` in the values")
    return text


def pin_manifests(text: str, digests: dict[str, str]) -> str:
    """Rendered manifests with every `<repository>:<tag>` of the images followed by `@<digest>`.

    `kubetune-server:` never matches inside `kubetune-server-vllm:`: the tag's colon must follow the repository.
    """
    for image, digest in _checked(digests).items():
        pattern = re.compile(rf"(\b{re.escape(repository(image))}:[\w.-]+)(?:@sha256:[a-f0-9]{{64}})?(?=[\s\"']|$)")
        text, count = pattern.subn(rf"\g<1>@{digest}", text)
        if count == 0:
            raise PinError(f"the manifests never name {repository(image)}:<tag>")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/pin_digests.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["values", "manifests"], help="a chart values.yaml, or rendered manifests")
    parser.add_argument("file", type=Path, help="rewritten in place")
    for image in IMAGES:
        parser.add_argument(f"--{image}", required=True, metavar="SHA256", help=f"digest of {repository(image)}")
    args = parser.parse_args(argv)
    digests = {image: getattr(args, image.replace("-", "_")) for image in IMAGES}
    pin = pin_values if args.kind == "values" else pin_manifests
    try:
        args.file.write_text(pin(args.file.read_text("utf-8"), digests), "utf-8")
    except PinError as error:
        print(f"{args.file}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
