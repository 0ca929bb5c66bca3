"""What a dataset config reads, listed and checked without building the run.

For the three layouts of the three libraries this package trains with:

* COCO (mmdet ``CocoDataset``): the annotation JSON's ``images[].file_name`` under
  ``data_prefix.img`` (and ``data_prefix.seg`` label maps if set);
* mmseg folders (``BaseSegDataset``, ``ADE20KDataset``, ...): the images under
  ``data_prefix.img_path`` (or the names in ``ann_file``) and their label maps under
  ``data_prefix.seg_map_path``;
* ImageNet style (mmpretrain ``CustomDataset``, ``ImageNet``): class folders under
  ``data_prefix``, or the ``path label`` lines of ``ann_file``.

The dataset class is built lazily (``lazy_init=True``, no pipeline; no file is read) so that
its own defaults and path joins (suffixes, ``split``, ``data_root``) decide the paths; the files
are then listed and parsed here, which is cheaper than the library's loading and names the file
and the fix in each error. A class that loads its data its own way (overrides
``load_data_list``) is left to the library.

Two depths of checking (:func:`quick_problem` and :func:`decode_problem`): the quick one runs
before every training and test (``stat`` and the first bytes of each file: about 9 us a file on
a warm page cache against 2 us for ``stat`` alone; ``tools/analysis/data_check_benchmark.py``);
the full one decodes every file (``tools/misc/verify_dataset.py``).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import stat
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import IMAGE_SUFFIXES

#: Top-level config key: class folders that may be empty (a list of folder names, or True for
#: any). They are then named in a warning instead of stopping the run.
ALLOW_EMPTY_CLASS_FOLDERS_KEY = 'allow_empty_class_folders'

#: The command that decodes every file (named in the quick check's errors).
VERIFY_COMMAND = 'python tools/misc/verify_dataset.py CONFIG'

#: The leading bytes of each image format OpenCV or Pillow decode: ``(offset, bytes)`` pairs, any
#: one of which identifies the format.
IMAGE_SIGNATURES: dict[str, tuple[tuple[int, bytes], ...]] = {
    'PNG': ((0, b'\x89PNG\r\n\x1a\n'),),
    'JPEG': ((0, b'\xff\xd8\xff'),),
    'BMP': ((0, b'BM'),),
    'TIFF': ((0, b'II*\x00'), (0, b'MM\x00*')),
    'WebP': ((8, b'WEBP'),),
    'GIF': ((0, b'GIF87a'), (0, b'GIF89a')),
    'PNM': tuple((0, b'P%d' % n) for n in range(1, 8)),
    'JPEG 2000': ((4, b'jP  '), (0, b'\xff\x4f\xff\x51')),
}
#: File suffixes whose content must start with one of :data:`IMAGE_SIGNATURES` (any of them:
#: the decoders go by content, so a PNG named .jpg is fine).
SNIFFED_SUFFIXES = frozenset(IMAGE_SUFFIXES) | {'.gif', '.ppm', '.pgm', '.pbm', '.pnm', '.jp2'}
SNIFF_BYTES = 16


@dataclass(frozen=True)
class DataFile:
    """A file a dataset reads.

    Attributes:
        path: The path, as the dataset will open it.
        kind: ``'image'`` or ``'label map'``.
        listed_in: The annotation file that names it ('' for a file found in a folder).
        image: For a label map found by its image's name, that image ('' otherwise).
    """
    path: str
    kind: str = 'image'
    listed_in: str = ''
    image: str = ''


@dataclass
class DatasetFiles:
    """The files of one dataset config (:func:`list_dataset_files`).

    Attributes:
        key: The config key of the dataset, e.g. ``train_dataloader.dataset``.
        files: Every image and label map it reads.
        warnings: Things allowed by the config that the user should still read (one line each).
    """
    key: str
    files: list[DataFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Annotation files
# ---------------------------------------------------------------------------------------------
REGENERATE = 'regenerate or re-download it'


def read_json(path: str, what: str = 'annotation file') -> Any:
    """Parses the JSON file ``path``; every failure is one InputError with the position.

    Raises:
        InputError: The file is empty, not UTF-8 or not valid JSON (the message gives the line,
            column and byte where parsing stopped).
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as error:
        raise InputError(f'{what} {path} cannot be read: {error.strerror}') from None
    if not data.strip():
        raise InputError(f'{what} {path} is empty ({len(data)} bytes); {REGENERATE}')
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as error:
        raise InputError(f'{what} {path} is not UTF-8 text (byte {error.start}); '
                         f'{REGENERATE}') from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        byte = len(text[:error.pos].encode('utf-8'))
        raise InputError(f'{what} {path} is not valid JSON: line {error.lineno} column '
                         f'{error.colno} (byte {byte}): {error.msg}; {REGENERATE}') from None


def read_lines(path: str, what: str = 'annotation file') -> list[str]:
    """The lines of a list file, as ``mmengine.list_from_file`` reads them (newlines stripped)."""
    try:
        with open(path, encoding='utf-8') as f:
            return [line.rstrip('\n\r') for line in f]
    except UnicodeDecodeError as error:
        raise InputError(f'{what} {path} is not UTF-8 text (byte {error.start}); '
                         f'{REGENERATE}') from None
    except OSError as error:
        raise InputError(f'{what} {path} cannot be read: {error.strerror}') from None


# ---------------------------------------------------------------------------------------------
# The dataset object (lazy: only its resolved paths and options are used)
# ---------------------------------------------------------------------------------------------
def build_lazy_dataset(dataset_cfg: dict, scope: str | None) -> Any | None:
    """The dataset ``dataset_cfg`` builds, without loading anything (no pipeline, lazy_init).

    Returns:
        The dataset object, or None where it cannot be built here (the runner's build then
        reports why).
    """
    from mmengine.registry import DATASETS

    # MMEngine's own keys (_scope_, _delete_) are no arguments; _scope_ picks the registry.
    args = {k: v for k, v in dict(dataset_cfg).items()
            if k not in ('type', 'pipeline') and not (k.startswith('_') and k.endswith('_'))}
    scope = dataset_cfg.get('_scope_', scope)
    try:
        with DATASETS.switch_scope_and_registry(scope) as registry:
            dataset_type = dataset_cfg.get('type')
            cls = registry.get(dataset_type) if isinstance(dataset_type, str) else dataset_type
            if cls is None:
                return None
            return cls(**args, pipeline=[], lazy_init=True)
    except Exception:  # noqa: BLE001  (a config the build itself reports with its own words)
        return None


#: Per library: the base dataset class whose ``load_data_list`` this module mirrors.
LAYOUT_BASES = {
    'mmdet': ('mmdet.datasets', 'CocoDataset'),
    'mmseg': ('mmseg.datasets', 'BaseSegDataset'),
    'mmpretrain': ('mmpretrain.datasets', 'CustomDataset'),
}


def _layout_of(dataset: Any) -> str | None:
    """The library whose base layout ``dataset`` loads with, unchanged; else None."""
    import importlib

    library = type(dataset).__module__.split('.')[0]
    if library not in LAYOUT_BASES:
        return None
    module, name = LAYOUT_BASES[library]
    base = getattr(importlib.import_module(module), name)
    if isinstance(dataset, base) and type(dataset).load_data_list is base.load_data_list:
        return library
    return None


def list_dataset_files(dataset_cfg: dict, key: str, scope: str | None,
                       allow_empty_class_folders: bool | Sequence[str] = False
                       ) -> DatasetFiles | None:
    """Lists the files ``dataset_cfg`` reads and checks the structure around them.

    Args:
        dataset_cfg: A leaf dataset config (not a wrapper).
        key: Its config key, for messages.
        scope: The config's ``default_scope``.
        allow_empty_class_folders: Class folders that may be empty (names, or True for any).

    Returns:
        The files, or None for a dataset whose layout is not one of the three (or that does not
        build here).

    Raises:
        InputError: An annotation file that does not parse, a dataset without samples, a class
            folder that is missing or (unless allowed) empty.
    """
    dataset = build_lazy_dataset(dataset_cfg, scope)
    layout = _layout_of(dataset) if dataset is not None else None
    if layout == 'mmdet':
        files = _coco_files(dataset, key)
    elif layout == 'mmseg':
        files = _seg_files(dataset, key)
    elif layout == 'mmpretrain':
        files = _classification_files(dataset, key, allow_empty_class_folders)
    else:
        return None
    return files


#: Keys mmdet's CocoDataset reads from every ``images`` entry.
COCO_IMAGE_KEYS = ('id', 'file_name', 'height', 'width')


def _coco_files(dataset: Any, key: str) -> DatasetFiles:
    ann_file = dataset.ann_file
    coco = read_json(ann_file)
    images = coco.get('images') if isinstance(coco, dict) else None
    if not isinstance(images, list):
        raise InputError(f'annotation file {ann_file} has no "images" list: it is not a COCO '
                         f'instances file; {REGENERATE}')
    if not images:
        raise InputError(f'annotation file {ann_file} lists no images, so {key} would be empty; '
                         'point ann_file to the annotations of a split with images')
    img_dir = dataset.data_prefix.get('img', '')
    seg_dir = dataset.data_prefix.get('seg')
    result = DatasetFiles(key)
    for index, image in enumerate(images):
        missing = [k for k in COCO_IMAGE_KEYS if not isinstance(image, dict) or k not in image]
        if missing:
            raise InputError(f'annotation file {ann_file}: images[{index}] has no '
                             f'{", ".join(missing)}; {REGENERATE}')
        file_name = str(image['file_name'])
        result.files.append(DataFile(osp.join(img_dir, file_name), listed_in=ann_file))
        if seg_dir:
            seg_name = file_name.rsplit('.', 1)[0] + dataset.seg_map_suffix
            result.files.append(DataFile(osp.join(seg_dir, seg_name), 'label map', ann_file))
    return result


def _seg_files(dataset: Any, key: str) -> DatasetFiles:
    from mmengine.fileio import list_dir_or_file

    img_dir = dataset.data_prefix.get('img_path') or ''
    seg_dir = dataset.data_prefix.get('seg_map_path')
    img_suffix, seg_suffix = dataset.img_suffix, dataset.seg_map_suffix
    ann_file = dataset.ann_file
    if ann_file and not osp.isdir(ann_file):  # as BaseSegDataset.load_data_list decides
        names = [line.strip() for line in read_lines(ann_file)]
        listed_in = ann_file
        empty = f'annotation file {ann_file} lists no images'
    else:
        names = [name[:-len(img_suffix)] for name in
                 list_dir_or_file(img_dir, list_dir=False, suffix=img_suffix, recursive=True)]
        listed_in = ''
        empty = f'{img_dir} holds no *{img_suffix} image'
    if not names:
        raise InputError(f'{empty}, so {key} would be empty; put the images there or point '
                         f'{key}.data_prefix.img_path (or img_suffix) elsewhere')
    result = DatasetFiles(key)
    for name in sorted(names):
        image = osp.join(img_dir, name + img_suffix)
        result.files.append(DataFile(image, listed_in=listed_in))
        if seg_dir is not None:
            result.files.append(DataFile(osp.join(seg_dir, name + seg_suffix), 'label map',
                                         listed_in, image=image))
    return result


def _classification_files(dataset: Any, key: str,
                          allow_empty: bool | Sequence[str]) -> DatasetFiles:
    prefix = dataset.img_prefix
    result = DatasetFiles(key)
    if dataset.ann_file:
        ann_file = dataset.ann_file
        for number, line in enumerate(read_lines(ann_file), 1):
            name = line.strip()
            if dataset.with_label:
                parts = name.rsplit(' ', 1)
                if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                    raise InputError(f'annotation file {ann_file}, line {number}: {line!r} is not '
                                     '"PATH LABEL" (LABEL an integer); fix the line')
                name = parts[0]
            result.files.append(DataFile(osp.join(prefix, name), listed_in=ann_file))
        if not result.files:
            raise InputError(f'annotation file {ann_file} lists no images, so {key} would be '
                             'empty; point ann_file to a list with images')
        return result
    if not dataset.with_label:
        result.files = [DataFile(osp.join(prefix, name)) for name in _valid_files(dataset, prefix)]
    else:
        folders = _class_folders(dataset, key, prefix)
        empty = []
        for folder in folders:
            names = _valid_files(dataset, osp.join(prefix, folder))
            if not names:
                empty.append(folder)
            result.files.extend(DataFile(osp.join(prefix, folder, name)) for name in names)
        _check_empty_folders(dataset, key, prefix, empty, allow_empty, result)
    if not result.files:
        raise InputError(f'{prefix} holds no image ({", ".join(sorted(dataset.extensions))}), so '
                         f'{key} would be empty; put the images there (one folder per class) or '
                         f'point {key}.data_prefix elsewhere')
    return result


def _valid_files(dataset: Any, folder: str) -> list[str]:
    from mmengine.fileio import list_dir_or_file

    return sorted(name for name in list_dir_or_file(folder, list_dir=False, recursive=True)
                  if dataset.is_valid_file(name))


def _class_folders(dataset: Any, key: str, prefix: str) -> list[str]:
    """The class folders, checked against the dataset's classes (mmpretrain numbers the labels
    by sorted folder name, so a missing folder would shift every label after it)."""
    from mmengine.fileio import list_dir_or_file

    folders = sorted(list_dir_or_file(prefix, list_dir=True, list_file=False, recursive=False))
    classes = dataset.CLASSES
    if classes is None or len(classes) == len(folders):
        return folders
    missing = [name for name in classes if name not in folders]
    extra = [name for name in folders if name not in classes]
    if missing and len(missing) == len(classes) - len(folders):
        raise InputError(f'class folder {osp.join(prefix, missing[0])} is missing'
                         + (f' (and {len(missing) - 1} more: {", ".join(missing[1:4])})'
                            if len(missing) > 1 else '')
                         + f': {key} has {len(classes)} classes and {prefix} holds '
                         f'{len(folders)} class folders; add the folder with its images')
    named = f' (not a class: {", ".join(extra[:3])})' if extra else ''
    raise InputError(f'{prefix} holds {len(folders)} class folders{named} but {key} has '
                     f'{len(classes)} classes (metainfo.classes); give every class one folder '
                     '(labels are numbered by sorted folder name)')


def _check_empty_folders(dataset: Any, key: str, prefix: str, empty: list[str],
                         allow_empty: bool | Sequence[str], result: DatasetFiles) -> None:
    allowed = [f for f in empty if allow_empty is True or
               (not isinstance(allow_empty, (bool, str)) and f in allow_empty)]
    refused = [f for f in empty if f not in allowed]
    extensions = ', '.join(sorted(dataset.extensions))
    if refused:
        folder = osp.join(prefix, refused[0])
        more = f' (and {len(refused) - 1} more)' if len(refused) > 1 else ''
        raise InputError(
            f'class folder {folder}{more} holds no image ({extensions}), so its class has no '
            f'sample in {key}; add its images or, if it is empty on purpose, set '
            f'{ALLOW_EMPTY_CLASS_FOLDERS_KEY}=[{", ".join(repr(f) for f in refused)}] in the '
            'config')
    for name in allowed:
        result.warnings.append(
            f'class folder {osp.join(prefix, name)} of {key} is empty: class {name!r} has no '
            f'sample (allowed by {ALLOW_EMPTY_CLASS_FOLDERS_KEY})')


# ---------------------------------------------------------------------------------------------
# One file: quick (stat + first bytes) and full (decode)
# ---------------------------------------------------------------------------------------------
def image_format(head: bytes) -> str | None:
    """The image format whose signature ``head`` (a file's first bytes) starts with, or None."""
    for name, signatures in IMAGE_SIGNATURES.items():
        if any(head[offset:offset + len(magic)] == magic for offset, magic in signatures):
            return name
    return None


def _is_sniffed(path: str) -> bool:
    return osp.splitext(path)[1].lower() in SNIFFED_SUFFIXES


def quick_problem(path: str) -> str | None:
    """What is wrong with ``path`` by ``stat`` and its first bytes (None if nothing).

    The problem is worded to follow the path: "does not exist", "is empty (0 bytes)", ...
    Files without an image suffix are only ``stat``-ed.
    """
    sniff = _is_sniffed(path)
    try:
        # One open + fstat + read: half the time of stat, then open() and read.
        fd = os.open(path, os.O_RDONLY) if sniff else None
    except FileNotFoundError:
        return 'does not exist'
    except IsADirectoryError:
        return 'is a folder, not a file'
    except OSError as error:
        return f'cannot be read: {error.strerror}'
    try:
        try:
            info = os.fstat(fd) if fd is not None else os.stat(path)
        except FileNotFoundError:
            return 'does not exist'
        if stat.S_ISDIR(info.st_mode):
            return 'is a folder, not a file'
        if not stat.S_ISREG(info.st_mode):
            return 'is not a regular file'
        if info.st_size == 0:
            return 'is empty (0 bytes)'
        if fd is None:
            return None
        head = os.read(fd, SNIFF_BYTES)
    except OSError as error:
        return f'cannot be read: {error.strerror}'
    finally:
        if fd is not None:
            os.close(fd)
    if image_format(head) is None:
        return f'is not an image: it starts with {head[:12]!r}, the signature of no image format'
    return None


def decode_problem(path: str, kind: str = 'image') -> str | None:
    """What is wrong with ``path`` when decoded as OpenCV does in the pipelines (None if fine).

    Beyond :func:`quick_problem`: OpenCV cannot decode it (a truncated PNG or JPEG, a corrupt
    body behind a valid header). Label maps are decoded unchanged (as mmseg reads them).
    """
    import cv2
    import numpy as np

    problem = quick_problem(path)
    if problem:
        return problem
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as error:
        return f'cannot be read: {error.strerror}'
    flag = cv2.IMREAD_UNCHANGED if kind == 'label map' else cv2.IMREAD_COLOR
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as error:
        return f'cannot be decoded: {str(error).strip().splitlines()[-1]}'
    if array is None or array.size == 0:
        return f'cannot be decoded as an image ({len(data)} bytes; corrupt or truncated)'
    return None


def find_problems(files: Iterable[DataFile]) -> list[tuple[DataFile, str]]:
    """``(file, problem)`` for each file :func:`quick_problem` finds fault with, in order."""
    return [(file, problem) for file in files if (problem := quick_problem(file.path))]


def describe_problem(file: DataFile, problem: str) -> str:
    """One line: the file, what is wrong and what names it."""
    where = (f' (listed in {file.listed_in})' if file.listed_in else
             f' (the label map of {file.image})' if file.image else '')
    return f'{file.kind} {file.path} {problem}{where}'


def problem_fix(file: DataFile, problem: str) -> str:
    """What to do about ``problem`` with ``file``."""
    if problem == 'does not exist':
        return ('restore it, or remove its entry from the list' if file.listed_in else
                'add it, or remove its image')
    drop = ('remove its entry from the list' if file.listed_in else
            'remove it and its image' if file.image else 'delete it')
    return f'replace it with a readable file, or {drop}'


def problems_error(key: str, problems: Sequence[tuple[DataFile, str]], total: int) -> InputError:
    """The quick check's one error for a dataset: the first bad file, and how many more."""
    file, problem = problems[0]
    more = (f'; {len(problems) - 1} more of its {total} files have problems too ({VERIFY_COMMAND} '
            'lists them all)' if len(problems) > 1 else '')
    return InputError(f'{key}: {describe_problem(file, problem)}; {problem_fix(file, problem)}'
                      f'{more}')
