"""The data checks: annotation files, dataset layouts and single files
(repnext_mm/datasets/checks.py), and the full decode (repnext_mm/datasets/verify.py)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from repnext_mm.datasets.checks import (ALLOW_EMPTY_CLASS_FOLDERS_KEY, DataFile, decode_problem,
                                        image_format, list_dataset_files, problems_error,
                                        quick_problem, read_json)
from repnext_mm.datasets.verify import decode_all
from repnext_mm.utils.errors import InputError
from tests.helpers import write_shape_images


def encoded(suffix: str, size: int = 32) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(suffix, image)[1].tobytes()


# ---------------------------------------------------------------------------------------------
# Annotation files
# ---------------------------------------------------------------------------------------------
class TestReadJson:

    def test_truncated_file_names_line_column_and_byte(self, tmp_path):
        path = tmp_path / 'a.json'
        path.write_text('{"images": [\n  {"id": 1, "file_name": "x.png"},\n  {"id": 2, "fi')
        with pytest.raises(InputError) as error:
            read_json(str(path))
        message = str(error.value)
        assert message.startswith(f'annotation file {path} is not valid JSON: line 3 column ')
        assert 'regenerate or re-download it' in message

    def test_byte_offset_counts_bytes_not_characters(self, tmp_path):
        path = tmp_path / 'a.json'
        path.write_bytes('{"name": "ü", x}'.encode())  # ü is two bytes
        with pytest.raises(InputError, match=r'line 1 column 15 \(byte 15\)'):
            read_json(str(path))

    @pytest.mark.parametrize('data, expected', [
        (b'', 'is empty (0 bytes)'), (b'\xff\xfe{', 'is not UTF-8 text (byte 0)')])
    def test_empty_and_binary_files(self, tmp_path, data, expected):
        path = tmp_path / 'a.json'
        path.write_bytes(data)
        with pytest.raises(InputError, match=expected.replace('(', r'\(').replace(')', r'\)')):
            read_json(str(path))


# ---------------------------------------------------------------------------------------------
# Single files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('suffix, name', [
    ('.png', 'PNG'), ('.jpg', 'JPEG'), ('.bmp', 'BMP'), ('.tif', 'TIFF'), ('.webp', 'WebP'),
    ('.ppm', 'PNM')])
def test_image_format_knows_what_opencv_writes(suffix, name):
    assert image_format(encoded(suffix)[:16]) == name


class TestQuickProblem:

    def test_good_image_and_unsniffed_suffix(self, tmp_path):
        (tmp_path / 'a.png').write_bytes(encoded('.png'))
        (tmp_path / 'b.npy').write_bytes(b'not sniffed: unknown suffix')
        assert quick_problem(str(tmp_path / 'a.png')) is None
        assert quick_problem(str(tmp_path / 'b.npy')) is None

    def test_a_png_named_jpg_is_fine(self, tmp_path):
        (tmp_path / 'a.jpg').write_bytes(encoded('.png'))  # the decoders go by content
        assert quick_problem(str(tmp_path / 'a.jpg')) is None

    def test_problems(self, tmp_path):
        (tmp_path / 'empty.png').write_bytes(b'')
        (tmp_path / 'text.png').write_text('hello world, not an image')
        (tmp_path / 'folder.png').mkdir()
        (tmp_path / 'empty.npy').write_bytes(b'')
        assert quick_problem(str(tmp_path / 'missing.png')) == 'does not exist'
        assert quick_problem(str(tmp_path / 'empty.png')) == 'is empty (0 bytes)'
        assert quick_problem(str(tmp_path / 'empty.npy')) == 'is empty (0 bytes)'
        assert quick_problem(str(tmp_path / 'folder.png')) == 'is a folder, not a file'
        assert quick_problem(str(tmp_path / 'text.png')).startswith(
            "is not an image: it starts with b'hello world,'")


class TestDecodeProblem:

    def test_truncated_png_passes_the_quick_check_but_not_decoding(self, tmp_path):
        path = tmp_path / 'a.png'
        path.write_bytes(encoded('.png')[:100])
        assert quick_problem(str(path)) is None
        assert 'cannot be decoded' in decode_problem(str(path))

    def test_truncated_jpeg(self, tmp_path):
        path = tmp_path / 'a.jpg'
        data = encoded('.jpg', 64)
        path.write_bytes(data[:len(data) * 2 // 3])
        assert quick_problem(str(path)) is None
        assert decode_problem(str(path)).startswith('cannot be decoded as an image')

    def test_good_files(self, tmp_path):
        for suffix in ('.png', '.jpg'):
            (tmp_path / f'a{suffix}').write_bytes(encoded(suffix))
            assert decode_problem(str(tmp_path / f'a{suffix}')) is None
        label = tmp_path / 'label.png'
        cv2.imwrite(str(label), np.arange(64, dtype=np.uint8).reshape(8, 8))
        assert decode_problem(str(label), 'label map') is None


@pytest.mark.parametrize('workers', [1, 2])
def test_decode_all_lists_every_bad_file_in_order(tmp_path, workers):
    files = []
    for index in range(150):  # more than one chunk
        path = tmp_path / f'{index:03d}.png'
        path.write_bytes(b'' if index in (3, 140) else encoded('.png', 8))
        files.append(DataFile(str(path)))
    files.append(DataFile(str(tmp_path / 'missing.png')))
    problems = decode_all(files, workers, progress=False)
    assert [(Path(f.path).name, p) for f, p in problems] == [
        ('003.png', 'is empty (0 bytes)'), ('140.png', 'is empty (0 bytes)'),
        ('missing.png', 'does not exist')]


def test_problems_error_names_the_first_file_and_counts_the_rest():
    files = [DataFile('a.png', listed_in='ann.json'), DataFile('b.png', listed_in='ann.json')]
    message = str(problems_error('train_dataloader.dataset',
                                 [(files[0], 'does not exist'), (files[1], 'is empty (0 bytes)')],
                                 10))
    assert message == ('train_dataloader.dataset: image a.png does not exist (listed in ann.json); '
                       'restore it, or remove its entry from the list; 1 more of its 10 files '
                       'have problems too (python tools/misc/verify_dataset.py CONFIG lists them '
                       'all)')


# ---------------------------------------------------------------------------------------------
# Layouts (the real dataset classes resolve the paths)
# ---------------------------------------------------------------------------------------------
def coco_dataset(root: Path, images: list) -> dict:
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    (root / 'annotations' / 'a.json').write_text(json.dumps(dict(
        images=images, annotations=[], categories=[dict(id=1, name='circle')])))
    return dict(type='CocoDataset', data_root=f'{root}/', ann_file='annotations/a.json',
                data_prefix=dict(img='img/'), metainfo=dict(classes=('circle', )),
                _scope_='mmdet')


class TestLayouts:

    def test_coco_lists_every_image_under_the_prefix(self, tmp_path):
        images = [dict(id=i, file_name=f'{i}.png', height=8, width=8) for i in range(3)]
        listed = list_dataset_files(coco_dataset(tmp_path, images), 'd', 'mmdet')
        assert [f.path for f in listed.files] == [f'{tmp_path}/img/{i}.png' for i in range(3)]
        assert listed.files[0].listed_in == f'{tmp_path}/annotations/a.json'

    def test_coco_entry_without_file_name(self, tmp_path):
        with pytest.raises(InputError, match=r'images\[0\] has no file_name'):
            list_dataset_files(coco_dataset(tmp_path, [dict(id=1, height=8, width=8)]), 'd',
                               'mmdet')

    def test_coco_without_images(self, tmp_path):
        with pytest.raises(InputError, match='lists no images, so d would be empty'):
            list_dataset_files(coco_dataset(tmp_path, []), 'd', 'mmdet')

    def test_segmentation_folders_pair_images_with_label_maps(self, tmp_path):
        for split in ('img', 'ann'):
            (tmp_path / split / 'sub').mkdir(parents=True)
        (tmp_path / 'img' / 'sub' / 'a.jpg').write_bytes(b'x')
        (tmp_path / 'img' / 'b.jpg').write_bytes(b'x')
        (tmp_path / 'img' / 'ignored.png').write_bytes(b'x')
        dataset = dict(type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.jpg',
                       data_prefix=dict(img_path='img', seg_map_path='ann'))
        listed = list_dataset_files(dataset, 'd', 'mmseg')
        assert [(f.kind, Path(f.path).relative_to(tmp_path).as_posix()) for f in listed.files] == [
            ('image', 'img/b.jpg'), ('label map', 'ann/b.png'),
            ('image', 'img/sub/a.jpg'), ('label map', 'ann/sub/a.png')]
        assert listed.files[1].image == f'{tmp_path}/img/b.jpg'

    def test_segmentation_without_images(self, tmp_path):
        (tmp_path / 'img').mkdir()
        dataset = dict(type='BaseSegDataset', data_root=str(tmp_path),
                       data_prefix=dict(img_path='img', seg_map_path='img'))
        with pytest.raises(InputError, match=r'holds no \*.jpg image, so d would be empty'):
            list_dataset_files(dataset, 'd', 'mmseg')

    def test_classification_annotation_list(self, tmp_path):
        (tmp_path / 'list.txt').write_text('a/1.png 0\nb/2.png 1\n')
        dataset = dict(type='CustomDataset', data_root=str(tmp_path), ann_file='list.txt',
                       metainfo=dict(classes=('a', 'b')))
        listed = list_dataset_files(dataset, 'd', 'mmpretrain')
        assert [f.path for f in listed.files] == [f'{tmp_path}/a/1.png', f'{tmp_path}/b/2.png']
        (tmp_path / 'list.txt').write_text('a/1.png 0\nb/2.png\n')
        with pytest.raises(InputError, match=r"list.txt, line 2: 'b/2.png' is not \"PATH LABEL\""):
            list_dataset_files(dataset, 'd', 'mmpretrain')

    def test_class_folders_against_the_classes(self, tmp_path):
        write_shape_images(tmp_path / 'train', 8)
        dataset = dict(type='CustomDataset', data_root=str(tmp_path), data_prefix='train',
                       metainfo=dict(classes=('circle', 'square', 'star', 'triangle')))
        assert len(list_dataset_files(dataset, 'd', 'mmpretrain').files) == 8
        (tmp_path / 'train' / 'extra').mkdir()
        with pytest.raises(InputError, match=r'holds 5 class folders \(not a class: extra\) but '
                                             'd has 4 classes'):
            list_dataset_files(dataset, 'd', 'mmpretrain')

    def test_empty_class_folder_fails_unless_allowed_by_name(self, tmp_path):
        write_shape_images(tmp_path / 'train', 8)
        for path in (tmp_path / 'train' / 'star').iterdir():
            path.unlink()
        (tmp_path / 'train' / 'star' / 'notes.txt').write_text('not a sample')
        dataset = dict(type='CustomDataset', data_root=str(tmp_path), data_prefix='train')
        folder = tmp_path / 'train' / 'star'
        with pytest.raises(InputError, match=f'class folder {folder} holds no image'):
            list_dataset_files(dataset, 'd', 'mmpretrain')
        with pytest.raises(InputError, match=f'class folder {folder} holds no image'):
            list_dataset_files(dataset, 'd', 'mmpretrain', ['square'])  # another name
        for allowed in (['star'], True):
            listed = list_dataset_files(dataset, 'd', 'mmpretrain', allowed)
            assert listed.warnings == [f"class folder {folder} of d is empty: class 'star' has "
                                       f'no sample (allowed by {ALLOW_EMPTY_CLASS_FOLDERS_KEY})']
            assert len(listed.files) == 6

    def test_unknown_layouts_are_left_to_the_library(self, tmp_path):
        assert list_dataset_files(dict(type='NoSuchDataset'), 'd', 'mmdet') is None
        voc = dict(type='VOCDataset', data_root=str(tmp_path), ann_file='x.txt')
        assert list_dataset_files(voc, 'd', 'mmdet') is None
