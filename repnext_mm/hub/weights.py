"""The authors' release files by URL, in MMEngine's checkpoint-loader registry.

``import repnext_mm`` registers :func:`load_from_repnext_release` with
``mmengine.runner.checkpoint.CheckpointLoader`` for the release folder
(:data:`repnext_mm.releases.RELEASE_URL`, and :func:`~repnext_mm.releases.release_base_url` where
``REPNEXT_RELEASE_URL`` names another), so every MMEngine path that takes a checkpoint name takes
the address of any released checkpoint (:data:`repnext_mm.releases.CHECKPOINT_FILES`) as it is::

    model = dict(backbone=dict(init_cfg=dict(
        type='Pretrained', prefix='backbone.',
        checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/'
                   'repnext_m4_distill_300e.pth')))
    load_from = 'https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m4_coco.pth'

and so do ``tools/test.py CONFIG URL`` and the package's own readers
(:func:`repnext_mm.apis.checkpoint.read_checkpoint` dispatches addresses through the registry).

The file is downloaded once into torch hub's cache (``torch.hub.get_dir()/checkpoints``, under
``$TORCH_HOME``), where timm's ``pretrained=True`` also looks, and used from there afterwards.
A download is written under a temporary name in that folder and renamed only after it arrived
whole and the converter recognized it (:mod:`repnext_mm.deploy.convert.source`), so a failed
download leaves nothing behind. The loader returns the file converted in memory to this
package's layout, ``{'state_dict', 'meta'}``: the whole model (classifier, Mask R-CNN, Semantic
FPN; ``prefix='backbone.'`` takes the backbone out of any of them), with the metadata a converted
file records (a fused release makes ``tools/test.py`` build the fused model).

In a multi-process run every process fetches for itself: a process that finds no cached file
downloads its own copy, and the renames are atomic, so no process reads a partial file (and none
waits on a barrier for a download that failed elsewhere).

Addresses outside the release folder keep MMEngine's own loader.
"""
from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from repnext_mm import releases
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write
from repnext_mm.version import __version__

if TYPE_CHECKING:  # the converter is imported when a file is loaded, not with the package
    from repnext_mm.deploy.convert.common import ConversionResult
    from repnext_mm.deploy.convert.source import Source

#: Seconds a download may wait for the server (to connect, or between two reads).
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class _DownloadError(Exception):
    """Why a download did not give a complete file (turned into one :class:`InputError`)."""


# ----------------------------------------------------------------------------------------------
# Addresses and the cache
# ----------------------------------------------------------------------------------------------
def release_prefixes() -> tuple[str, ...]:
    """The release folders served: the authors', and the one ``REPNEXT_RELEASE_URL`` names."""
    return tuple(dict.fromkeys((releases.RELEASE_URL, releases.release_base_url())))


def is_release_url(url: str) -> bool:
    """Whether ``url`` lies in a release folder of :func:`release_prefixes`."""
    return isinstance(url, str) and url.startswith(release_prefixes())


def cache_dir() -> Path:
    """torch hub's checkpoint cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / 'checkpoints'


def manual_route() -> str:
    """What to do instead of loading the address (the end of every download error)."""
    return ('download the file by hand, convert it with `python tools/deploy/convert_official.py '
            'FILE OUT` and use OUT instead of the URL')


def release_filename(url: str) -> str:
    """The released checkpoint ``url`` names.

    Raises:
        InputError: The name is not one of :data:`repnext_mm.releases.CHECKPOINT_FILES`.
    """
    name = urlparse(url).path.rsplit('/', 1)[-1]
    if name not in releases.CHECKPOINT_FILES:
        coreml = name.endswith('.mlmodel')
        raise InputError(
            f'{url} is ' + ('a Core ML model, not a checkpoint' if coreml else
                            "not a checkpoint of the authors' release")
            + '; the release\'s checkpoints are repnext_mX_distill_300e.pth, '
            'repnext_mX_distill_300e_fused.pt (TorchScript), repnext_mX_sz224_*.pth.tar (timm), '
            'repnext_mX_coco.pth and repnext_mX_ade20k.pth (see repnext_mm.releases)')
    return name


# ----------------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------------
def _download_to(url: str, dst: Path) -> tuple[int, str]:
    """Streams ``url`` into the new file ``dst``; returns the byte count and the content type.

    Raises:
        _DownloadError: An HTTP error, no connection, or fewer bytes than announced.
    """
    request = urllib.request.Request(url, headers={'User-Agent': f'repnext_mm/{__version__}'})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, \
                open(dst, 'xb') as file:
            announced = response.headers.get('Content-Length')
            content_type = response.headers.get_content_type()
            received = 0
            while chunk := response.read(_CHUNK):
                file.write(chunk)
                received += len(chunk)
            file.flush()
            os.fsync(file.fileno())
    except urllib.error.HTTPError as error:
        raise _DownloadError(f'HTTP {error.code} {error.reason}') from error
    except urllib.error.URLError as error:
        raise _DownloadError(f'no connection: {error.reason}') from error
    except (OSError, http.client.HTTPException) as error:  # timeouts, resets, bad responses
        raise _DownloadError(f'{type(error).__name__}: {error}'.rstrip(': ')) from error
    # http.client returns a short body without complaint when the connection closes early.
    if announced is not None and announced.isdigit() and received != int(announced):
        raise _DownloadError(f'the transfer stopped after {received} of {announced} bytes')
    return received, content_type


def _not_a_release(tmp: Path, size: int, content_type: str, error: InputError) -> _DownloadError:
    """Why a complete download is not a release file: a web page, or what the converter said."""
    with open(tmp, 'rb') as file:
        head = file.read(512).lstrip().lower()
    if content_type == 'text/html' or head.startswith((b'<!doctype html', b'<html')):
        return _DownloadError(f'the server sent a web page ({size} bytes of {content_type}), not '
                              'the file')
    detail = str(error).replace(str(tmp), 'it').rstrip('.')
    return _DownloadError(f'the server sent {size} bytes that are not one of the release\'s '
                          f'checkpoints ({detail})')


def _recognize(path: Path, url: str) -> Source:
    """``path`` read and recognized by the converter, as a ``Source`` named by ``url``."""
    from repnext_mm.deploy.convert.source import read_source

    source = read_source(path)
    source.path = url  # the converter's messages name the address, not the cache
    return source


def _fetch(url: str, name: str | None = None) -> tuple[Path, Source | None]:
    """The cached file of ``url`` (downloaded if absent) and, if it was downloaded now, its
    recognized ``Source`` (``None`` for a file already cached).

    Args:
        url: The address.
        name: The file's name in the cache (default: the release's name, checked).
    """
    cached = cache_dir() / (name or release_filename(url))
    if cached.is_file():
        return cached, None
    found: list[Source] = []

    def download(tmp: Path) -> None:
        size, content_type = _download_to(url, tmp)
        try:  # before the rename: what is cached has been recognized
            found.append(_recognize(tmp, url))
        except InputError as error:
            raise _not_a_release(tmp, size, content_type, error) from error

    print_log(f'downloading {url} to {cached}', logger='current')
    try:
        atomic_write(cached, download)  # a temporary beside it, renamed once complete
    except _DownloadError as error:
        raise InputError(f'could not download {url}: {error}. Nothing was kept in '
                         f'{cached.parent}; {manual_route()}') from error
    except OSError as error:  # the cache folder (the download's own errors are the ones above)
        # The reason only: an OutputWriteError's text carries advice of its own.
        reason = f'{error.strerror} [Errno {error.errno}]' if error.strerror else str(error)
        raise InputError(f'could not save {url} in {cached.parent} ({reason}); point TORCH_HOME '
                         f'at a writable folder, or {manual_route()}') from error
    print_log(f'downloaded {cached.stat().st_size / 1e6:.1f} MB: {found[0].kind.found}',
              logger='current')
    return cached, found[0]


def fetch_release(url: str) -> Path:
    """The cached copy of a released checkpoint, downloaded (and recognized) on first use.

    timm's ``pretrained=True`` finds the file there by its name too, so calling this first makes
    its download one of these (checked, and cut-short files never cached).

    Raises:
        InputError: Not a released checkpoint's address, or the download failed (one line
            naming the URL and the manual route; nothing is left in the cache).
    """
    return _fetch(url)[0]


def fetch_checked(url: str) -> Path:
    """Any address of one of the authors' files (a mirror, a copy elsewhere), downloaded with the
    checks of :func:`fetch_release` into the same cache under the address's file name.

    Raises:
        InputError: An address without a file name, or the download failed or is not one of the
            releases (nothing is left in the cache).
    """
    if is_release_url(url):
        return fetch_release(url)
    name = urlparse(url).path.rsplit('/', 1)[-1]
    if not name:
        raise InputError(f'{url} names no file; pass the address of a checkpoint file')
    return _fetch(url, name)[0]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _meta(source: Source, result: ConversionResult, url: str) -> dict[str, Any]:
    """The metadata a file converted by ``tools/deploy/convert_official.py`` records."""
    fused = source.kind.name == 'fused'
    info: dict[str, Any] = dict(
        converted_from=url, source_kind=source.kind.name, source_format=source.kind.found,
        source_weights=source.entry, task='model', arch=result.arch,
        num_classes=result.num_classes, config=source.kind.config.format(arch=result.arch),
        fused=fused)
    if fused:  # tools/test.py builds the fused model from these
        info['cfg_options'] = dict(source.kind.cfg_options)
    meta: dict[str, Any] = dict(repnext_mm=info)
    if 'classes' in source.info:
        meta['dataset_meta'] = dict(classes=tuple(source.info['classes']))
    return meta


def load_release_url(url: str, map_location: Any = None) -> dict[str, Any]:
    """A released checkpoint, by address, as ``{'state_dict', 'meta'}`` in this package's layout.

    Args:
        url: The file's address in a release folder (:func:`is_release_url`).
        map_location: A device for the tensors (default: the CPU).

    Raises:
        InputError: As :func:`fetch_release`, or a cached file the converter does not take.
    """
    from repnext_mm.deploy.convert.official import convert_source

    cached, source = _fetch(url)
    if source is None:
        try:
            source = _recognize(cached, url)
        except InputError as error:
            raise InputError(f'the cached copy of {url} ({cached}) does not load: {error} '
                             'Delete it to download the file again.') from error
    result = convert_source(source, 'model')
    state_dict = result.state_dict
    if isinstance(map_location, (str, torch.device)) and str(map_location) != 'cpu':
        state_dict = {key: value.to(map_location) for key, value in state_dict.items()}
    return dict(state_dict=state_dict, meta=_meta(source, result, url))


def load_from_repnext_release(filename: str, map_location: Any = None) -> dict[str, Any]:
    """MMEngine's ``CheckpointLoader`` entry (its log calls it the ``repnext_release`` backend):
    :func:`load_release_url`."""
    return load_release_url(filename, map_location)


def register_release_loader() -> tuple[str, ...]:
    """Registers :func:`load_from_repnext_release` for every folder of :func:`release_prefixes`
    (again after ``REPNEXT_RELEASE_URL`` changed); returns the registered prefixes (patterns)."""
    # CheckpointLoader matches its prefixes as regular expressions.
    prefixes = tuple(re.escape(prefix) for prefix in release_prefixes())
    CheckpointLoader.register_scheme(list(prefixes), load_from_repnext_release, force=True)
    return prefixes
